//! The built-in model: tables of CloudTrail shapes, written from the field sets, API mix, error
//! mix and message forms of the public sample sets in `tests/data/cloudtrail` (see its
//! PROVENANCE.md), without copying any of their records.
//!
//! Request, response and message templates are compact JSON fragments (already escaped) with
//! `$name$` placeholders that [`Piece::compile`] resolves once; every placeholder expands to
//! characters that need no JSON escaping.

/// One API call shape: who serves it, how often it appears, and its request/response bodies.
#[derive(Debug, Clone, Copy)]
pub struct ApiShape {
    pub source: &'static str,
    pub name: &'static str,
    /// Relative frequency among non-error records (the counts in the invictus-ir hour).
    pub weight: u32,
    pub read_only: bool,
    /// `requestParameters` JSON, or `null`.
    pub request: &'static str,
    /// `responseElements` JSON, or `null`.
    pub response: &'static str,
    /// `resources` JSON array, or "" for none.
    pub resources: &'static str,
}

/// One error shape: the API it happens on, its errorCode and errorMessage template.
#[derive(Debug, Clone, Copy)]
pub struct ErrorShape {
    pub source: &'static str,
    pub name: &'static str,
    pub code: &'static str,
    /// "" for errors that CloudTrail records without an errorMessage.
    pub message: &'static str,
    /// Relative frequency among error records.
    pub weight: u32,
}

const S3_BUCKET_RESOURCES: &str = r#"[{"accountId":"$acct$","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::$bucket$"}]"#;
const KMS_KEY_RESOURCES: &str =
    r#"[{"accountId":"$acct$","type":"AWS::KMS::Key","ARN":"arn:aws:kms:$region$:$acct$:key/$uuid$"}]"#;
const EC2_HOST_FILTER: &str = r#"{"routeTableIdSet":{},"filterSet":{"items":[{"name":"association.main","valueSet":{"items":[{"value":"true"}]}},{"name":"vpc-id","valueSet":{"items":[{"value":"vpc-$hex17$"}]}}]}}"#;

pub const APIS: &[ApiShape] = &[
    ApiShape {
        source: "kms.amazonaws.com",
        name: "Decrypt",
        weight: 178,
        read_only: true,
        request: r#"{"encryptionAlgorithm":"SYMMETRIC_DEFAULT","encryptionContext":{"SecretARN":"arn:aws:secretsmanager:$region$:$acct$:secret:$word$-secret-$num$-$alnum6$","SecretVersionId":"$UUID$"}}"#,
        response: "null",
        resources: KMS_KEY_RESOURCES,
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeRouteTables",
        weight: 163,
        read_only: true,
        request: EC2_HOST_FILTER,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "iam.amazonaws.com",
        name: "GetUser",
        weight: 130,
        read_only: true,
        request: r#"{"userName":"$uname$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ssm.amazonaws.com",
        name: "DescribeParameters",
        weight: 122,
        read_only: true,
        request: r#"{"parameterFilters":[{"key":"Name","option":"Equals","values":["/credentials/$word$/credentials-$num$"]}]}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ssm.amazonaws.com",
        name: "ListTagsForResource",
        weight: 88,
        read_only: true,
        request: r#"{"resourceType":"Parameter","resourceId":"/credentials/$word$/credentials-$num$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ssm.amazonaws.com",
        name: "GetParameter",
        weight: 82,
        read_only: true,
        request: r#"{"name":"/credentials/$word$/credentials-$num$","withDecryption":true}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ssm.amazonaws.com",
        name: "DeleteParameter",
        weight: 78,
        read_only: false,
        request: r#"{"name":"/credentials/$word$/credentials-$num$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ssm.amazonaws.com",
        name: "PutParameter",
        weight: 67,
        read_only: false,
        request: r#"{"name":"/credentials/$word$/credentials-$num$","description":"","type":"SecureString","overwrite":false,"tier":"Standard","dataType":"text"}"#,
        response: r#"{"version":1,"tier":"Standard"}"#,
        resources: "",
    },
    ApiShape {
        source: "secretsmanager.amazonaws.com",
        name: "GetSecretValue",
        weight: 60,
        read_only: true,
        request: r#"{"secretId":"arn:aws:secretsmanager:$region$:$acct$:secret:$word$-secret-$num$-$alnum6$","versionId":"$UUID$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeNatGateways",
        weight: 54,
        read_only: true,
        request: r#"{"DescribeNatGatewaysRequest":{"NatGatewayId":{"content":"nat-$hex17$","tag":1}}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "sts.amazonaws.com",
        name: "AssumeRole",
        weight: 49,
        read_only: true,
        request: r#"{"roleArn":"arn:aws:iam::$acct$:role/$word$-role","roleSessionName":"aws-go-sdk-$digits19$","durationSeconds":900}"#,
        response: r#"{"credentials":{"accessKeyId":"$asia$","sessionToken":"$token$","expiration":"Jul 10, 2023, 12:$num$:$num$ PM"},"assumedRoleUser":{"assumedRoleId":"AROA$upper16$:aws-go-sdk-$digits19$","arn":"arn:aws:sts::$acct$:assumed-role/$word$-role/aws-go-sdk-$digits19$"}}"#,
        resources: r#"[{"accountId":"$acct$","type":"AWS::IAM::Role","ARN":"arn:aws:iam::$acct$:role/$word$-role"}]"#,
    },
    ApiShape {
        source: "health.amazonaws.com",
        name: "DescribeEventAggregates",
        weight: 48,
        read_only: true,
        request: r#"{"filter":{"startTimes":[{"from":"Jul 3, 2023, 11:42:38 AM"}],"eventStatusCodes":["open","upcoming"]},"aggregateField":"eventTypeCategory"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeVpcAttribute",
        weight: 48,
        read_only: true,
        request: r#"{"vpcId":"vpc-$hex17$","attribute":"enableDnsSupport"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "rds.amazonaws.com",
        name: "DescribeOrderableDBInstanceOptions",
        weight: 45,
        read_only: true,
        request: r#"{"engine":"mysql","engineVersion":"8.0.32","dBInstanceClass":"db.t3.micro","licenseModel":"general-public-license","vpc":true}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeVpcs",
        weight: 43,
        read_only: true,
        request: r#"{"vpcSet":{"items":[{"vpcId":"vpc-$hex17$"}]},"filterSet":{}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketAcl",
        weight: 42,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","acl":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "kms.amazonaws.com",
        name: "Encrypt",
        weight: 42,
        read_only: true,
        request: r#"{"keyId":"arn:aws:kms:$region$:$acct$:key/$uuid$","encryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#,
        response: "null",
        resources: KMS_KEY_RESOURCES,
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeAccountAttributes",
        weight: 41,
        read_only: true,
        request: r#"{"accountAttributeNameSet":{"items":[{"attributeName":"supported-platforms"}]},"filterSet":{}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeSubnets",
        weight: 40,
        read_only: true,
        request: r#"{"subnetSet":{"items":[{"subnetId":"subnet-$hex17$"}]},"filterSet":{}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "iam.amazonaws.com",
        name: "ListAttachedRolePolicies",
        weight: 39,
        read_only: true,
        request: r#"{"roleName":"$word$-role"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "secretsmanager.amazonaws.com",
        name: "GetResourcePolicy",
        weight: 39,
        read_only: true,
        request: r#"{"secretId":"arn:aws:secretsmanager:$region$:$acct$:secret:$word$-secret-$num$-$alnum6$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "secretsmanager.amazonaws.com",
        name: "DescribeSecret",
        weight: 36,
        read_only: true,
        request: r#"{"secretId":"arn:aws:secretsmanager:$region$:$acct$:secret:$word$-secret-$num$-$alnum6$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "rds.amazonaws.com",
        name: "DescribeDBInstances",
        weight: 35,
        read_only: true,
        request: r#"{"dBInstanceIdentifier":"terraform-$digits26$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "iam.amazonaws.com",
        name: "GetRole",
        weight: 31,
        read_only: true,
        request: r#"{"roleName":"$word$-role"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeSecurityGroups",
        weight: 30,
        read_only: true,
        request: r#"{"securityGroupSet":{},"securityGroupIdSet":{"items":[{"groupId":"sg-$hex17$"}]},"filterSet":{}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "GetPasswordData",
        weight: 2,
        read_only: true,
        request: r#"{"instanceId":"i-$hex17$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeInstanceAttribute",
        weight: 8,
        read_only: true,
        request: r#"{"instanceId":"i-$hex17$","attribute":"userData"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ssm.amazonaws.com",
        name: "DescribeInstanceInformation",
        weight: 27,
        read_only: true,
        request: r#"{"maxResults":50}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeAvailabilityZones",
        weight: 26,
        read_only: true,
        request: r#"{"availabilityZoneSet":{},"availabilityZoneIdSet":{},"allAvailabilityZones":false}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeNetworkAcls",
        weight: 26,
        read_only: true,
        request: r#"{"networkAclIdSet":{},"filterSet":{"items":[{"name":"vpc-id","valueSet":{"items":[{"value":"vpc-$hex17$"}]}},{"name":"default","valueSet":{"items":[{"value":"true"}]}}]}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeVolumes",
        weight: 12,
        read_only: true,
        request: r#"{"volumeSet":{"items":[{"volumeId":"vol-$hex17$"}]},"filterSet":{}}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "RunInstances",
        weight: 6,
        read_only: false,
        request: r#"{"instancesSet":{"items":[{"imageId":"ami-$hex17$","minCount":1,"maxCount":1}]},"instanceType":"t3.micro","blockDeviceMapping":{},"monitoring":{"enabled":false},"disableApiTermination":false,"disableApiStop":false,"clientToken":"$uuid$","iamInstanceProfile":{"name":"$word$-instance"},"tagSpecificationSet":{"items":[{"resourceType":"instance","tags":[{"key":"StratusRedTeam","value":"true"}]}]}}"#,
        response: r#"{"requestId":"$uuid$","reservationId":"r-$hex17$","ownerId":"$acct$","groupSet":{},"instancesSet":{"items":[{"instanceId":"i-$hex17$","imageId":"ami-$hex17$","currentInstanceBootMode":"legacy-bios","instanceState":{"code":0,"name":"pending"},"privateDnsName":"ip-10-0-$num$-$num$.ec2.internal","amiLaunchIndex":0,"productCodes":{},"instanceType":"t3.micro","launchTime":1688991328000,"placement":{"availabilityZone":"$region$a","tenancy":"default"},"monitoring":{"state":"disabled"},"subnetId":"subnet-$hex17$","vpcId":"vpc-$hex17$","privateIpAddress":"10.0.$num$.$num$","stateReason":{"code":"pending","message":"pending"},"architecture":"x86_64","rootDeviceType":"ebs","rootDeviceName":"/dev/xvda","blockDeviceMapping":{},"virtualizationType":"hvm","hypervisor":"xen","groupSet":{"items":[{"groupId":"sg-$hex17$","groupName":"default"}]},"sourceDestCheck":true,"networkInterfaceSet":{"items":[{"networkInterfaceId":"eni-$hex17$","subnetId":"subnet-$hex17$","vpcId":"vpc-$hex17$","ownerId":"$acct$","status":"in-use","macAddress":"0e:6b:1a:$num$:$num$:$num$","privateIpAddress":"10.0.$num$.$num$","sourceDestCheck":true,"interfaceType":"interface"}]},"ebsOptimized":false,"enaSupport":true,"cpuOptions":{"coreCount":1,"threadsPerCore":2},"capacityReservationSpecification":{"capacityReservationPreference":"open"},"enclaveOptions":{"enabled":false},"metadataOptions":{"state":"pending","httpTokens":"optional","httpPutResponseHopLimit":1,"httpEndpoint":"enabled"},"maintenanceOptions":{"autoRecovery":"default"}}]}}"#,
        resources: "",
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketPolicy",
        weight: 20,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","policy":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketLifecycle",
        weight: 15,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","lifecycle":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketPublicAccessBlock",
        weight: 15,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","publicAccessBlock":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketCors",
        weight: 12,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","cors":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketWebsite",
        weight: 12,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","website":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "s3.amazonaws.com",
        name: "GetBucketTagging",
        weight: 10,
        read_only: true,
        request: r#"{"bucketName":"$bucket$","Host":"$bucket$.s3.$region$.amazonaws.com","tagging":""}"#,
        response: "null",
        resources: S3_BUCKET_RESOURCES,
    },
    ApiShape {
        source: "cloudtrail.amazonaws.com",
        name: "LookupEvents",
        weight: 20,
        read_only: true,
        request: r#"{"maxResults":50,"lookupAttributes":[{"attributeKey":"ReadOnly","attributeValue":"false"}]}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "cloudtrail.amazonaws.com",
        name: "StopLogging",
        weight: 1,
        read_only: false,
        request: r#"{"name":"arn:aws:cloudtrail:$region$:$acct$:trail/$word$-trail-$alnum10$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "iam.amazonaws.com",
        name: "CreateAccessKey",
        weight: 3,
        read_only: false,
        request: r#"{"userName":"$uname$"}"#,
        response: r#"{"accessKey":{"accessKeyId":"$akia$","status":"Active","userName":"$uname$","createDate":"Jul 10, 2023 12:24:29 PM"}}"#,
        resources: "",
    },
    ApiShape {
        source: "sts.amazonaws.com",
        name: "GetSessionToken",
        weight: 3,
        read_only: true,
        request: r#"{"durationSeconds":3600}"#,
        response: r#"{"credentials":{"accessKeyId":"$asia$","sessionToken":"$token$","expiration":"Jul 10, 2023, 1:$num$:$num$ PM"}}"#,
        resources: "",
    },
    ApiShape {
        source: "iam.amazonaws.com",
        name: "DeleteLoginProfile",
        weight: 2,
        read_only: false,
        request: r#"{"userName":"$uname$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "lambda.amazonaws.com",
        name: "ListFunctions20150331",
        weight: 15,
        read_only: true,
        request: "null",
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "sts.amazonaws.com",
        name: "GetCallerIdentity",
        weight: 15,
        read_only: true,
        request: "null",
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "logs.amazonaws.com",
        name: "DescribeLogGroups",
        weight: 6,
        read_only: true,
        request: r#"{"limit":50,"logGroupNamePrefix":"/aws/lambda/$word$"}"#,
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "organizations.amazonaws.com",
        name: "LeaveOrganization",
        weight: 1,
        read_only: false,
        request: "null",
        response: "null",
        resources: "",
    },
    ApiShape {
        source: "ec2.amazonaws.com",
        name: "DescribeAddresses",
        weight: 8,
        read_only: true,
        request: r#"{"allocationIdsSet":{"items":[{"allocationId":"eipalloc-$hex17$"}]},"filterSet":{},"publicIpsSet":{}}"#,
        response: "null",
        resources: "",
    },
];

pub const ERRORS: &[ErrorShape] = &[
    ErrorShape {
        source: "ssm.amazonaws.com",
        name: "DescribeParameters",
        code: "ThrottlingException",
        message: "Rate exceeded",
        weight: 39,
    },
    ErrorShape {
        source: "ssm.amazonaws.com",
        name: "DeleteParameter",
        code: "ThrottlingException",
        message: "Rate exceeded",
        weight: 38,
    },
    ErrorShape {
        source: "ssm.amazonaws.com",
        name: "PutParameter",
        code: "ThrottlingException",
        message: "Rate exceeded",
        weight: 25,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "GetPasswordData",
        code: "Client.UnauthorizedOperation",
        message: "You are not authorized to perform this operation. Encoded authorization failure message: $blob$",
        weight: 29,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeInstanceAttribute",
        code: "Client.UnauthorizedOperation",
        message: "You are not authorized to perform this operation. User: $arn$ is not authorized to perform: ec2:DescribeInstanceAttribute on resource: arn:aws:ec2:$region$:$acct$:instance/i-$hex17$ because no identity-based policy allows the ec2:DescribeInstanceAttribute action. Encoded authorization failure message: $blob$",
        weight: 15,
    },
    ErrorShape {
        source: "sts.amazonaws.com",
        name: "AssumeRole",
        code: "AccessDenied",
        message: "User: $arn$ is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::$acct$:role/$word$-role",
        weight: 13,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeRouteTables",
        code: "Client.InvalidRouteTableID.NotFound",
        message: "The routeTable ID 'rtb-$hex17$' does not exist",
        weight: 13,
    },
    ErrorShape {
        source: "s3.amazonaws.com",
        name: "GetBucketPolicy",
        code: "NoSuchBucketPolicy",
        message: "The bucket policy does not exist",
        weight: 14,
    },
    ErrorShape {
        source: "s3.amazonaws.com",
        name: "GetBucketPublicAccessBlock",
        code: "NoSuchPublicAccessBlockConfiguration",
        message: "The public access block configuration was not found",
        weight: 12,
    },
    ErrorShape {
        source: "s3.amazonaws.com",
        name: "GetBucketLifecycle",
        code: "NoSuchLifecycleConfiguration",
        message: "The lifecycle configuration does not exist",
        weight: 10,
    },
    ErrorShape {
        source: "s3.amazonaws.com",
        name: "GetBucketCors",
        code: "NoSuchCORSConfiguration",
        message: "The CORS configuration does not exist",
        weight: 10,
    },
    ErrorShape {
        source: "s3.amazonaws.com",
        name: "GetBucketWebsite",
        code: "NoSuchWebsiteConfiguration",
        message: "The specified bucket does not have a website configuration",
        weight: 10,
    },
    ErrorShape {
        source: "s3.amazonaws.com",
        name: "GetBucketTagging",
        code: "NoSuchTagSet",
        message: "The TagSet does not exist",
        weight: 5,
    },
    ErrorShape {
        source: "cloudtrail.amazonaws.com",
        name: "StopLogging",
        code: "TrailNotFoundException",
        message: "Unknown trail: arn:aws:cloudtrail:$region$:$acct$:trail/$word$-trail-$alnum10$ for the user: $acct$",
        weight: 7,
    },
    ErrorShape {
        source: "iam.amazonaws.com",
        name: "DeleteLoginProfile",
        code: "NoSuchEntityException",
        message: "Login Profile for User $uname$ cannot be found.",
        weight: 5,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "RunInstances",
        code: "Client.InvalidParameterValue",
        message: "Value ($word$-instance) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
        weight: 4,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "RunInstances",
        code: "Client.VcpuLimitExceeded",
        message: "You have requested more vCPU capacity than your current vCPU limit of $num$ allows for the instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
        weight: 2,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeVolumes",
        code: "Client.InvalidVolume.NotFound",
        message: "The volume 'vol-$hex17$' does not exist.",
        weight: 2,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeVpcs",
        code: "Client.InvalidVpcID.NotFound",
        message: "The vpc ID 'vpc-$hex17$' does not exist",
        weight: 2,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeAddresses",
        code: "Client.InvalidAllocationID.NotFound",
        message: "The allocation ID 'eipalloc-$hex17$' does not exist",
        weight: 2,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeSubnets",
        code: "Client.InvalidSubnetID.NotFound",
        message: "The subnet ID 'subnet-$hex17$' does not exist",
        weight: 1,
    },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeSecurityGroups",
        code: "Client.InvalidGroup.NotFound",
        message: "The security group 'sg-$hex17$' does not exist",
        weight: 1,
    },
    ErrorShape {
        source: "organizations.amazonaws.com",
        name: "LeaveOrganization",
        code: "AccessDenied",
        message: "User: $arn$ is not authorized to perform: organizations:LeaveOrganization on resource: * because no identity-based policy allows the organizations:LeaveOrganization action",
        weight: 2,
    },
    ErrorShape {
        source: "lambda.amazonaws.com",
        name: "ListFunctions20150331",
        code: "AccessDenied",
        message: "User: $arn$ is not authorized to perform: lambda:ListFunctions on resource: * because no identity-based policy allows the lambda:ListFunctions action",
        weight: 2,
    },
    ErrorShape {
        source: "iam.amazonaws.com",
        name: "GetRole",
        code: "NoSuchEntityException",
        message: "The role with name $word$-role-$digits6$ cannot be found.",
        weight: 1,
    },
    ErrorShape {
        source: "rds.amazonaws.com",
        name: "DescribeDBInstances",
        code: "DBInstanceNotFound",
        message: "DBInstance terraform-$digits26$ not found.",
        weight: 1,
    },
    ErrorShape {
        source: "secretsmanager.amazonaws.com",
        name: "GetSecretValue",
        code: "ResourceNotFoundException",
        message: "Secrets Manager can't find the specified secret.",
        weight: 2,
    },
    ErrorShape {
        source: "kms.amazonaws.com",
        name: "Decrypt",
        code: "AccessDenied",
        message: "User: $arn$ is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:$region$:$acct$:key/$uuid$ because no resource-based policy allows the kms:Decrypt action",
        weight: 1,
    },
    ErrorShape {
        source: "logs.amazonaws.com",
        name: "DescribeLogGroups",
        code: "AccessDenied",
        message: "User: $arn$ is not authorized to perform: logs:DescribeLogGroups on resource: arn:aws:logs:$region$:$acct$:log-group::log-stream: because no identity-based policy allows the logs:DescribeLogGroups action",
        weight: 1,
    },
    ErrorShape {
        source: "iam.amazonaws.com",
        name: "GetUser",
        code: "AccessDenied",
        message: "User: $arn$ is not authorized to perform: iam:GetUser on resource: user $uname$ with an explicit deny in a service control policy",
        weight: 1,
    },
    ErrorShape { source: "sts.amazonaws.com", name: "GetCallerIdentity", code: "ExpiredToken", message: "", weight: 1 },
    ErrorShape { source: "ssm.amazonaws.com", name: "GetParameter", code: "ParameterNotFound", message: "", weight: 1 },
    ErrorShape {
        source: "ec2.amazonaws.com",
        name: "DescribeNatGateways",
        code: "NatGatewayNotFound",
        message: "The Nat Gateway nat-$hex17$ was not found",
        weight: 1,
    },
];

/// Regions, most used first; records pick the first far more often than the rest.
pub const REGIONS: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "us-west-2",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "us-east-2",
    "sa-east-1",
    "ca-central-1",
    "ap-south-1",
    "eu-north-1",
    "ap-southeast-2",
];

/// Words for generated names. No digits, so names made only of them survive templating, as
/// real user and role names do.
pub const WORDS: &[&str] = &[
    "alpha",
    "baker",
    "backup",
    "billing",
    "build",
    "ci",
    "data",
    "deploy",
    "dev",
    "etl",
    "finance",
    "github",
    "infra",
    "lambda",
    "logs",
    "ops",
    "payments",
    "platform",
    "prod",
    "reports",
    "sandbox",
    "security",
    "staging",
    "stratus",
    "terraform",
    "web",
];

/// First names for IAM users.
pub const USERS: &[&str] = &[
    "alice", "bettina", "bruno", "carol", "cedric", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
];

/// User agents, by share of calls.
pub const USER_AGENTS: &[(&str, u32)] = &[
    (
        "APN/1.0 HashiCorp/1.0 Terraform/1.1.2 (+https://www.terraform.io) terraform-provider-aws/5.7.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go/1.44.298 (go1.20.5; linux; amd64)",
        60,
    ),
    ("AWS Internal", 14),
    (
        "aws-cli/2.13.0 Python/3.11.4 Linux/5.15.0-1039-aws exe/x86_64.ubuntu.22 prompt/off command/sts.get-caller-identity",
        8,
    ),
    (
        "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488 Linux/5.10.184-154.734.amzn2int.x86_64 OpenJDK_64-Bit_Server_VM/25.372-b08 java/1.8.0_372 vendor/Oracle_Corporation cfg/retry-mode/standard]",
        4,
    ),
    ("Boto3/1.26.165 Python/3.10.6 Linux/5.19.0-46-generic Botocore/1.29.165", 6),
    ("stratus-red-team_5b0c2e7a-1d3f-4e8a-9c6b-2f4d8e1a7c3b", 3),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36",
        5,
    ),
];

/// Services that call on a principal's behalf (`invokedBy`) or as themselves (`AWSService`).
pub const SERVICES: &[&str] = &[
    "secretsmanager.amazonaws.com",
    "ssm.amazonaws.com",
    "health.amazonaws.com",
    "cloudformation.amazonaws.com",
    "lambda.amazonaws.com",
];

/// A template piece: literal JSON or a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Lit(&'static str),
    Ph(Ph),
}

/// Placeholders. Each expands to characters that need no JSON escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ph {
    /// The record's account id.
    Acct,
    /// The record's region.
    Region,
    /// The calling principal's ARN.
    Arn,
    /// An IAM user name of the account (no digits).
    UserName,
    /// 17 lowercase hex digits: the tail of an EC2 resource id.
    Hex17,
    Uuid,
    UuidUpper,
    /// 0–59, two digits.
    Num,
    /// Digit runs of fixed length (timestamps in generated names).
    Digits6,
    Digits19,
    Digits26,
    Alnum6,
    Alnum10,
    Upper16,
    /// A word from [`WORDS`].
    Word,
    /// A bucket name with a random suffix, as CloudFormation makes them.
    Bucket,
    /// An encoded authorization failure message (hundreds of URL-safe base64 chars).
    Blob,
    /// A fresh long-term access key id (`AKIA…`) inside a response, not the caller's.
    Akia,
    /// A fresh session access key id (`ASIA…`) inside a response, not the caller's.
    Asia,
    /// A session token (several hundred base64 chars).
    Token,
}

impl Piece {
    /// Splits a `$name$` template. Panics on an unknown name: the tables are constants, and a
    /// unit test compiles every one of them.
    pub fn compile(t: &'static str) -> Vec<Piece> {
        let mut out = Vec::new();
        for (i, part) in t.split('$').enumerate() {
            if i % 2 == 0 {
                if !part.is_empty() {
                    out.push(Piece::Lit(part));
                }
                continue;
            }
            let ph = match part {
                "acct" => Ph::Acct,
                "region" => Ph::Region,
                "arn" => Ph::Arn,
                "uname" => Ph::UserName,
                "hex17" => Ph::Hex17,
                "uuid" => Ph::Uuid,
                "UUID" => Ph::UuidUpper,
                "num" => Ph::Num,
                "digits6" => Ph::Digits6,
                "digits19" => Ph::Digits19,
                "digits26" => Ph::Digits26,
                "alnum6" => Ph::Alnum6,
                "alnum10" => Ph::Alnum10,
                "upper16" => Ph::Upper16,
                "word" => Ph::Word,
                "bucket" => Ph::Bucket,
                "blob" => Ph::Blob,
                "akia" => Ph::Akia,
                "asia" => Ph::Asia,
                "token" => Ph::Token,
                other => panic!("unknown placeholder ${other}$ in {t}"),
            };
            out.push(Piece::Ph(ph));
        }
        assert!(t.split('$').count() % 2 == 1, "unbalanced $ in {t}");
        out
    }
}
