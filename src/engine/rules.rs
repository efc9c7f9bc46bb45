//! Named detections: the 14 CloudWatch Logs metric filters of the CIS AWS Foundations
//! Benchmark, as AWS Security Hub checks them (controls `CloudWatch.1` … `CloudWatch.14`).
//!
//! Each rule is the published filter pattern, evaluated on a cluster instead of on a log
//! stream, so that an event can say "this new error cluster is what CIS alarm 5 watches for"
//! and severity rules can raise it. The patterns are the ones AWS documents for the controls
//! (CIS 1.2.0 §3.x, which Security Hub's CloudWatch.1–14 implement); see [`CIS_RULES`] for
//! each one verbatim. Two choices where versions differ:
//!
//! - `CloudWatch.3` uses the CIS 1.2.0 pattern `ConsoleLogin && MFAUsed != "Yes"`, not the
//!   later variant that adds `userIdentity.type = "IAMUser"` and a successful sign-in.
//! - `CloudWatch.13` uses the later pattern that adds `eventSource = ec2.amazonaws.com`: API
//!   Gateway v2 also has `CreateRoute`/`DeleteRoute`, which are not route-table changes.
//!
//! How a pattern reads a cluster:
//! - `eventSource`, `eventName` and `errorCode` come from the cluster key and hold for every
//!   record of the cluster.
//! - Conditions on other fields (`userIdentity.type`, `userIdentity.invokedBy`, `eventType`,
//!   `additionalEventData.MFAUsed`, `errorMessage`) are read from the cluster's sample record
//!   (its earliest record). As in CloudWatch Logs, a comparison on a missing field is false.
//! - Without a sample record (clusters built from Logs Insights aggregates), `CloudWatch.1`
//!   falls back to "a top principal is the account's root ARN" and `CloudWatch.6` to the
//!   message template being `Failed authentication`; `CloudWatch.3` cannot be decided and
//!   does not match.
//!
//! CIS patterns count attempts, successful or not, so a denied `StopLogging` matches
//! `CloudWatch.5` just as a successful one does: for an error inspector, someone trying to stop
//! the trail is the news.
//!
//! String comparisons are case-sensitive, as in CloudWatch Logs. Globs (`*` any run of
//! characters, `?` one character) are matched by [`glob_match`].

use serde_json::Value;

use super::cluster::ClusterKey;
use super::record::CONSOLE_LOGIN_FAILURE;

/// What a rule looks at.
#[derive(Debug, Clone, Default)]
pub struct RuleInput<'a> {
    pub event_source: &'a str,
    pub event_name: &'a str,
    /// The cluster's error kind: the `errorCode`, or `ConsoleLoginFailure`.
    pub error_code: &'a str,
    /// The message template (or a raw message).
    pub template: &'a str,
    /// The cluster's most frequent principal ARNs.
    pub principals: Vec<&'a str>,
    /// One full CloudTrail record of the cluster.
    pub sample: Option<&'a Value>,
}

impl<'a> RuleInput<'a> {
    pub fn new(key: &'a ClusterKey) -> Self {
        RuleInput {
            event_source: &key.event_source,
            event_name: &key.event_name,
            error_code: &key.error_code,
            template: &key.template,
            principals: Vec::new(),
            sample: None,
        }
    }

    pub fn with_principals(mut self, principals: impl IntoIterator<Item = &'a str>) -> Self {
        self.principals = principals.into_iter().collect();
        self
    }

    pub fn with_sample(mut self, sample: Option<&'a Value>) -> Self {
        self.sample = sample;
        self
    }

    /// The input for one raw record (which need not be an error): the record is its own sample.
    pub fn from_record(record: &'a Value) -> Self {
        let s = |v: &'a Value| v.as_str().unwrap_or("");
        let failed_sign_in = record["eventName"] == "ConsoleLogin"
            && (record["responseElements"]["ConsoleLogin"] == "Failure"
                || record["errorMessage"] == "Failed authentication");
        RuleInput {
            event_source: s(&record["eventSource"]),
            event_name: s(&record["eventName"]),
            error_code: if failed_sign_in { CONSOLE_LOGIN_FAILURE } else { s(&record["errorCode"]) },
            template: s(&record["errorMessage"]),
            principals: record["userIdentity"]["arn"].as_str().into_iter().collect(),
            sample: Some(record),
        }
    }

    /// A string field of the sample record; `None` when there is no sample, the field is
    /// missing, or it is not a string (CloudWatch Logs compares strings only).
    fn sample_str(&self, path: &[&str]) -> Option<&'a str> {
        let mut v = self.sample?;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
    }

    fn sample_has(&self, path: &[&str]) -> Option<bool> {
        let mut v = self.sample?;
        for p in path {
            match v.get(p) {
                Some(next) => v = next,
                None => return Some(false),
            }
        }
        Some(true)
    }
}

/// One named detection.
pub struct Rule {
    /// `CloudWatch.1` … `CloudWatch.14`.
    pub id: &'static str,
    pub title: &'static str,
    /// The published CloudWatch Logs filter pattern this rule implements.
    pub pattern: &'static str,
    matcher: fn(&RuleInput) -> bool,
}

impl Rule {
    pub fn matches(&self, input: &RuleInput) -> bool {
        (self.matcher)(input)
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("id", &self.id).field("title", &self.title).finish()
    }
}

const IAM_POLICY_EVENTS: &[&str] = &[
    "DeleteGroupPolicy",
    "DeleteRolePolicy",
    "DeleteUserPolicy",
    "PutGroupPolicy",
    "PutRolePolicy",
    "PutUserPolicy",
    "CreatePolicy",
    "DeletePolicy",
    "CreatePolicyVersion",
    "DeletePolicyVersion",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "AttachUserPolicy",
    "DetachUserPolicy",
    "AttachGroupPolicy",
    "DetachGroupPolicy",
];
const TRAIL_EVENTS: &[&str] = &["CreateTrail", "UpdateTrail", "DeleteTrail", "StartLogging", "StopLogging"];
const KMS_EVENTS: &[&str] = &["DisableKey", "ScheduleKeyDeletion"];
const S3_POLICY_EVENTS: &[&str] = &[
    "PutBucketAcl",
    "PutBucketPolicy",
    "PutBucketCors",
    "PutBucketLifecycle",
    "PutBucketReplication",
    "DeleteBucketPolicy",
    "DeleteBucketCors",
    "DeleteBucketLifecycle",
    "DeleteBucketReplication",
];
const CONFIG_EVENTS: &[&str] =
    &["StopConfigurationRecorder", "DeleteDeliveryChannel", "PutDeliveryChannel", "PutConfigurationRecorder"];
const SECURITY_GROUP_EVENTS: &[&str] = &[
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "CreateSecurityGroup",
    "DeleteSecurityGroup",
];
const NACL_EVENTS: &[&str] = &[
    "CreateNetworkAcl",
    "CreateNetworkAclEntry",
    "DeleteNetworkAcl",
    "DeleteNetworkAclEntry",
    "ReplaceNetworkAclEntry",
    "ReplaceNetworkAclAssociation",
];
const GATEWAY_EVENTS: &[&str] = &[
    "CreateCustomerGateway",
    "DeleteCustomerGateway",
    "AttachInternetGateway",
    "CreateInternetGateway",
    "DeleteInternetGateway",
    "DetachInternetGateway",
];
const ROUTE_TABLE_EVENTS: &[&str] = &[
    "CreateRoute",
    "CreateRouteTable",
    "ReplaceRoute",
    "ReplaceRouteTableAssociation",
    "DeleteRouteTable",
    "DeleteRoute",
    "DisassociateRouteTable",
];
const VPC_EVENTS: &[&str] = &[
    "CreateVpc",
    "DeleteVpc",
    "ModifyVpcAttribute",
    "AcceptVpcPeeringConnection",
    "CreateVpcPeeringConnection",
    "DeleteVpcPeeringConnection",
    "RejectVpcPeeringConnection",
    "AttachClassicLinkVpc",
    "DetachClassicLinkVpc",
    "DisableVpcClassicLink",
    "EnableVpcClassicLink",
];

fn name_in(i: &RuleInput, names: &[&str]) -> bool {
    names.contains(&i.event_name)
}

fn root_usage(i: &RuleInput) -> bool {
    match i.sample {
        Some(_) => {
            i.sample_str(&["userIdentity", "type"]) == Some("Root")
                && i.sample_has(&["userIdentity", "invokedBy"]) == Some(false)
                && i.sample_str(&["eventType"]).is_some_and(|t| t != "AwsServiceEvent")
        }
        None => i.principals.iter().any(|p| is_root_arn(p)),
    }
}

/// `arn:<partition>:iam::<12 digits>:root`.
fn is_root_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, "root"]
        if partition.starts_with("aws") && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
}

fn unauthorized(i: &RuleInput) -> bool {
    glob_match("*UnauthorizedOperation", i.error_code) || glob_match("AccessDenied*", i.error_code)
}

fn sign_in_without_mfa(i: &RuleInput) -> bool {
    i.event_name == "ConsoleLogin" && i.sample_str(&["additionalEventData", "MFAUsed"]).is_some_and(|m| m != "Yes")
}

fn console_auth_failure(i: &RuleInput) -> bool {
    i.event_name == "ConsoleLogin"
        && match i.sample {
            Some(_) => i.sample_str(&["errorMessage"]) == Some("Failed authentication"),
            None => i.template == "Failed authentication",
        }
}

/// The 14 rules, in control order.
pub static CIS_RULES: [Rule; 14] = [
    Rule {
        id: "CloudWatch.1",
        title: "Usage of the root user",
        pattern: r#"{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType != "AwsServiceEvent" }"#,
        matcher: root_usage,
    },
    Rule {
        id: "CloudWatch.2",
        title: "Unauthorized API calls",
        pattern: r#"{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }"#,
        matcher: unauthorized,
    },
    Rule {
        id: "CloudWatch.3",
        title: "Management Console sign-in without MFA",
        pattern: r#"{ ($.eventName = "ConsoleLogin") && ($.additionalEventData.MFAUsed != "Yes") }"#,
        matcher: sign_in_without_mfa,
    },
    Rule {
        id: "CloudWatch.4",
        title: "IAM policy changes",
        pattern: "{($.eventName=DeleteGroupPolicy)||($.eventName=DeleteRolePolicy)||($.eventName=DeleteUserPolicy)||\
                  ($.eventName=PutGroupPolicy)||($.eventName=PutRolePolicy)||($.eventName=PutUserPolicy)||\
                  ($.eventName=CreatePolicy)||($.eventName=DeletePolicy)||($.eventName=CreatePolicyVersion)||\
                  ($.eventName=DeletePolicyVersion)||($.eventName=AttachRolePolicy)||($.eventName=DetachRolePolicy)||\
                  ($.eventName=AttachUserPolicy)||($.eventName=DetachUserPolicy)||($.eventName=AttachGroupPolicy)||\
                  ($.eventName=DetachGroupPolicy)}",
        matcher: |i| name_in(i, IAM_POLICY_EVENTS),
    },
    Rule {
        id: "CloudWatch.5",
        title: "CloudTrail configuration changes",
        pattern: "{ ($.eventName = CreateTrail) || ($.eventName = UpdateTrail) || ($.eventName = DeleteTrail) || \
                  ($.eventName = StartLogging) || ($.eventName = StopLogging) }",
        matcher: |i| name_in(i, TRAIL_EVENTS),
    },
    Rule {
        id: "CloudWatch.6",
        title: "AWS Management Console authentication failures",
        pattern: r#"{ ($.eventName = ConsoleLogin) && ($.errorMessage = "Failed authentication") }"#,
        matcher: console_auth_failure,
    },
    Rule {
        id: "CloudWatch.7",
        title: "Disabling or scheduled deletion of customer managed keys",
        pattern: "{($.eventSource = kms.amazonaws.com) && (($.eventName=DisableKey)||($.eventName=ScheduleKeyDeletion)) }",
        matcher: |i| i.event_source == "kms.amazonaws.com" && name_in(i, KMS_EVENTS),
    },
    Rule {
        id: "CloudWatch.8",
        title: "S3 bucket policy changes",
        pattern: "{ ($.eventSource = s3.amazonaws.com) && (($.eventName = PutBucketAcl) || ($.eventName = PutBucketPolicy) || \
                  ($.eventName = PutBucketCors) || ($.eventName = PutBucketLifecycle) || ($.eventName = PutBucketReplication) || \
                  ($.eventName = DeleteBucketPolicy) || ($.eventName = DeleteBucketCors) || \
                  ($.eventName = DeleteBucketLifecycle) || ($.eventName = DeleteBucketReplication)) }",
        matcher: |i| i.event_source == "s3.amazonaws.com" && name_in(i, S3_POLICY_EVENTS),
    },
    Rule {
        id: "CloudWatch.9",
        title: "AWS Config configuration changes",
        pattern: "{ ($.eventSource = config.amazonaws.com) && (($.eventName=StopConfigurationRecorder)||\
                  ($.eventName=DeleteDeliveryChannel)||($.eventName=PutDeliveryChannel)||($.eventName=PutConfigurationRecorder)) }",
        matcher: |i| i.event_source == "config.amazonaws.com" && name_in(i, CONFIG_EVENTS),
    },
    Rule {
        id: "CloudWatch.10",
        title: "Security group changes",
        pattern: "{ ($.eventName = AuthorizeSecurityGroupIngress) || ($.eventName = AuthorizeSecurityGroupEgress) || \
                  ($.eventName = RevokeSecurityGroupIngress) || ($.eventName = RevokeSecurityGroupEgress) || \
                  ($.eventName = CreateSecurityGroup) || ($.eventName = DeleteSecurityGroup) }",
        matcher: |i| name_in(i, SECURITY_GROUP_EVENTS),
    },
    Rule {
        id: "CloudWatch.11",
        title: "Network ACL changes",
        pattern: "{ ($.eventName = CreateNetworkAcl) || ($.eventName = CreateNetworkAclEntry) || \
                  ($.eventName = DeleteNetworkAcl) || ($.eventName = DeleteNetworkAclEntry) || \
                  ($.eventName = ReplaceNetworkAclEntry) || ($.eventName = ReplaceNetworkAclAssociation) }",
        matcher: |i| name_in(i, NACL_EVENTS),
    },
    Rule {
        id: "CloudWatch.12",
        title: "Network gateway changes",
        pattern: "{ ($.eventName = CreateCustomerGateway) || ($.eventName = DeleteCustomerGateway) || \
                  ($.eventName = AttachInternetGateway) || ($.eventName = CreateInternetGateway) || \
                  ($.eventName = DeleteInternetGateway) || ($.eventName = DetachInternetGateway) }",
        matcher: |i| name_in(i, GATEWAY_EVENTS),
    },
    Rule {
        id: "CloudWatch.13",
        title: "Route table changes",
        pattern: "{ ($.eventSource = ec2.amazonaws.com) && (($.eventName = CreateRoute) || ($.eventName = CreateRouteTable) || \
                  ($.eventName = ReplaceRoute) || ($.eventName = ReplaceRouteTableAssociation) || \
                  ($.eventName = DeleteRouteTable) || ($.eventName = DeleteRoute) || ($.eventName = DisassociateRouteTable)) }",
        matcher: |i| i.event_source == "ec2.amazonaws.com" && name_in(i, ROUTE_TABLE_EVENTS),
    },
    Rule {
        id: "CloudWatch.14",
        title: "VPC changes",
        pattern: "{ ($.eventName = CreateVpc) || ($.eventName = DeleteVpc) || ($.eventName = ModifyVpcAttribute) || \
                  ($.eventName = AcceptVpcPeeringConnection) || ($.eventName = CreateVpcPeeringConnection) || \
                  ($.eventName = DeleteVpcPeeringConnection) || ($.eventName = RejectVpcPeeringConnection) || \
                  ($.eventName = AttachClassicLinkVpc) || ($.eventName = DetachClassicLinkVpc) || \
                  ($.eventName = DisableVpcClassicLink) || ($.eventName = EnableVpcClassicLink) }",
        matcher: |i| name_in(i, VPC_EVENTS),
    },
];

/// The rule with this id (`CloudWatch.5`), if any.
pub fn rule(id: &str) -> Option<&'static Rule> {
    CIS_RULES.iter().find(|r| r.id == id)
}

/// Ids of every rule the input matches, in control order.
pub fn matching_rules(input: &RuleInput) -> Vec<&'static str> {
    CIS_RULES.iter().filter(|r| r.matches(input)).map(|r| r.id).collect()
}

/// `*` matches any run of characters (also none), `?` exactly one; everything else itself.
/// Iterative, remembering the last `*`: O(pattern × text) at worst, never exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_records_dir;
    use serde_json::json;

    fn ids(v: &Value) -> Vec<&'static str> {
        matching_rules(&RuleInput::from_record(v))
    }

    #[test]
    fn fourteen_distinct_rules() {
        let mut seen: Vec<&str> = CIS_RULES.iter().map(|r| r.id).collect();
        assert_eq!(seen, (1..=14).map(|n| format!("CloudWatch.{n}")).collect::<Vec<_>>());
        seen.dedup();
        assert_eq!(seen.len(), 14);
        assert_eq!(rule("CloudWatch.7").unwrap().title, "Disabling or scheduled deletion of customer managed keys");
        assert!(rule("CloudWatch.15").is_none());
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*UnauthorizedOperation", "Client.UnauthorizedOperation", true),
            ("*UnauthorizedOperation", "UnauthorizedOperation", true),
            ("*UnauthorizedOperation", "UnauthorizedOperationX", false),
            ("AccessDenied*", "AccessDenied", true),
            ("AccessDenied*", "AccessDeniedException", true),
            ("AccessDenied*", "accessdenied", false),
            ("AccessDenied*", "Client.AccessDenied", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "a_b_b_c", true),
            ("a*b*c", "a_b_b_", false),
            ("日*", "日本", true),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
        // No exponential blow-up on hostile patterns.
        let started = std::time::Instant::now();
        assert!(glob_match(&"*a".repeat(50), &"a".repeat(5000)));
        assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &"a".repeat(5000)));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    /// One rule per row: a record that matches and near misses that do not.
    #[test]
    fn each_pattern_on_hand_made_records() {
        let rows: Vec<(&str, Value, bool)> = vec![
            (
                "CloudWatch.1",
                json!({"eventName":"GetBucketAcl","userIdentity":{"type":"Root"},"eventType":"AwsApiCall"}),
                true,
            ),
            (
                "CloudWatch.1",
                json!({"eventName":"X","userIdentity":{"type":"Root","invokedBy":"support.amazonaws.com"},"eventType":"AwsApiCall"}),
                false,
            ),
            (
                "CloudWatch.1",
                json!({"eventName":"X","userIdentity":{"type":"Root"},"eventType":"AwsServiceEvent"}),
                false,
            ),
            ("CloudWatch.1", json!({"eventName":"X","userIdentity":{"type":"Root"}}), false),
            (
                "CloudWatch.1",
                json!({"eventName":"X","userIdentity":{"type":"IAMUser"},"eventType":"AwsApiCall"}),
                false,
            ),
            ("CloudWatch.1", json!({"eventName":"X","userIdentity":{"type":"root"},"eventType":"AwsApiCall"}), false),
            ("CloudWatch.2", json!({"eventName":"X","errorCode":"Client.UnauthorizedOperation"}), true),
            ("CloudWatch.2", json!({"eventName":"X","errorCode":"AccessDenied"}), true),
            ("CloudWatch.2", json!({"eventName":"X","errorCode":"AccessDeniedException"}), true),
            ("CloudWatch.2", json!({"eventName":"X","errorCode":"UnauthorizedException"}), false),
            ("CloudWatch.2", json!({"eventName":"X","errorCode":"ThrottlingException"}), false),
            ("CloudWatch.3", json!({"eventName":"ConsoleLogin","additionalEventData":{"MFAUsed":"No"}}), true),
            ("CloudWatch.3", json!({"eventName":"ConsoleLogin","additionalEventData":{"MFAUsed":"Yes"}}), false),
            ("CloudWatch.3", json!({"eventName":"ConsoleLogin"}), false),
            ("CloudWatch.3", json!({"eventName":"GetSigninToken","additionalEventData":{"MFAUsed":"No"}}), false),
            ("CloudWatch.4", json!({"eventSource":"iam.amazonaws.com","eventName":"AttachUserPolicy"}), true),
            ("CloudWatch.4", json!({"eventSource":"iam.amazonaws.com","eventName":"DetachGroupPolicy"}), true),
            ("CloudWatch.4", json!({"eventSource":"iam.amazonaws.com","eventName":"SetDefaultPolicyVersion"}), false),
            ("CloudWatch.4", json!({"eventSource":"iam.amazonaws.com","eventName":"CreateUser"}), false),
            ("CloudWatch.5", json!({"eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging"}), true),
            ("CloudWatch.5", json!({"eventName":"UpdateTrail","errorCode":"AccessDenied"}), true),
            ("CloudWatch.5", json!({"eventSource":"cloudtrail.amazonaws.com","eventName":"PutEventSelectors"}), false),
            (
                "CloudWatch.6",
                json!({"eventName":"ConsoleLogin","errorMessage":"Failed authentication","responseElements":{"ConsoleLogin":"Failure"}}),
                true,
            ),
            ("CloudWatch.6", json!({"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Failure"}}), false),
            ("CloudWatch.6", json!({"eventName":"ConsoleLogin","errorMessage":"failed authentication"}), false),
            ("CloudWatch.7", json!({"eventSource":"kms.amazonaws.com","eventName":"ScheduleKeyDeletion"}), true),
            ("CloudWatch.7", json!({"eventSource":"kms.amazonaws.com","eventName":"DisableKey"}), true),
            ("CloudWatch.7", json!({"eventSource":"kms.amazonaws.com","eventName":"DisableKeyRotation"}), false),
            ("CloudWatch.7", json!({"eventSource":"s3.amazonaws.com","eventName":"DisableKey"}), false),
            ("CloudWatch.8", json!({"eventSource":"s3.amazonaws.com","eventName":"PutBucketPolicy"}), true),
            ("CloudWatch.8", json!({"eventSource":"s3.amazonaws.com","eventName":"DeleteBucketReplication"}), true),
            ("CloudWatch.8", json!({"eventSource":"s3.amazonaws.com","eventName":"PutBucketEncryption"}), false),
            ("CloudWatch.8", json!({"eventSource":"s3control.amazonaws.com","eventName":"PutBucketPolicy"}), false),
            (
                "CloudWatch.9",
                json!({"eventSource":"config.amazonaws.com","eventName":"StopConfigurationRecorder"}),
                true,
            ),
            (
                "CloudWatch.9",
                json!({"eventSource":"config.amazonaws.com","eventName":"StartConfigurationRecorder"}),
                false,
            ),
            ("CloudWatch.10", json!({"eventSource":"ec2.amazonaws.com","eventName":"RevokeSecurityGroupEgress"}), true),
            ("CloudWatch.10", json!({"eventSource":"ec2.amazonaws.com","eventName":"ModifySecurityGroupRules"}), false),
            (
                "CloudWatch.11",
                json!({"eventSource":"ec2.amazonaws.com","eventName":"ReplaceNetworkAclAssociation"}),
                true,
            ),
            ("CloudWatch.11", json!({"eventSource":"ec2.amazonaws.com","eventName":"DescribeNetworkAcls"}), false),
            ("CloudWatch.12", json!({"eventSource":"ec2.amazonaws.com","eventName":"DetachInternetGateway"}), true),
            ("CloudWatch.12", json!({"eventSource":"ec2.amazonaws.com","eventName":"CreateNatGateway"}), false),
            ("CloudWatch.13", json!({"eventSource":"ec2.amazonaws.com","eventName":"CreateRoute"}), true),
            ("CloudWatch.13", json!({"eventSource":"apigateway.amazonaws.com","eventName":"CreateRoute"}), false),
            (
                "CloudWatch.14",
                json!({"eventSource":"ec2.amazonaws.com","eventName":"AcceptVpcPeeringConnection"}),
                true,
            ),
            ("CloudWatch.14", json!({"eventSource":"ec2.amazonaws.com","eventName":"CreateVpcEndpoint"}), false),
        ];
        for (id, record, want) in rows {
            let got = rule(id).unwrap().matches(&RuleInput::from_record(&record));
            assert_eq!(got, want, "{id} on {record}");
        }
    }

    #[test]
    fn clusters_without_a_sample_use_the_key_and_principals() {
        let key = |source: &str, name: &str, code: &str, template: &str| ClusterKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            event_source: source.into(),
            event_name: name.into(),
            error_code: code.into(),
            template: template.into(),
        };
        let k = key("s3.amazonaws.com", "GetObject", "AccessDenied", "Access Denied");
        assert_eq!(matching_rules(&RuleInput::new(&k)), vec!["CloudWatch.2"]);
        let root = ["arn:aws:iam::123456789012:root"];
        assert_eq!(matching_rules(&RuleInput::new(&k).with_principals(root)), vec!["CloudWatch.1", "CloudWatch.2"]);
        let not_root = ["arn:aws:iam::123456789012:user/root", "arn:aws:iam::12345678901:root", "root"];
        assert_eq!(matching_rules(&RuleInput::new(&k).with_principals(not_root)), vec!["CloudWatch.2"]);
        let k = key("signin.amazonaws.com", "ConsoleLogin", "ConsoleLoginFailure", "Failed authentication");
        assert_eq!(matching_rules(&RuleInput::new(&k)), vec!["CloudWatch.6"]);
        let k = key("signin.amazonaws.com", "ConsoleLogin", "ConsoleLoginFailure", "");
        assert!(matching_rules(&RuleInput::new(&k)).is_empty());
        // With a sample, the sample decides, not the principal list.
        let sample = json!({"userIdentity":{"type":"IAMUser"},"eventType":"AwsApiCall"});
        let k = key("s3.amazonaws.com", "GetObject", "NoSuchKey", "x");
        assert!(matching_rules(&RuleInput::new(&k).with_principals(root).with_sample(Some(&sample))).is_empty());
    }

    #[test]
    fn stratus_red_team_detonations() {
        let dir = test_records_dir().join("stratus-red-team");
        let want: &[(&str, &str, &[&str])] = &[
            ("aws.defense-evasion.cloudtrail-stop.json", "StopLogging", &["CloudWatch.5"]),
            ("aws.defense-evasion.cloudtrail-delete.json", "DeleteTrail", &["CloudWatch.5"]),
            ("aws.defense-evasion.cloudtrail-event-selectors.json", "PutEventSelectors", &[]),
            (
                "aws.exfiltration.ec2-security-group-open-port-22-ingress.json",
                "AuthorizeSecurityGroupIngress",
                &["CloudWatch.10"],
            ),
            ("aws.persistence.iam-create-admin-user.json", "AttachUserPolicy", &["CloudWatch.4"]),
            ("aws.persistence.iam-create-backdoor-role.json", "AttachRolePolicy", &["CloudWatch.4"]),
            ("aws.persistence.iam-backdoor-role.json", "UpdateAssumeRolePolicy", &[]),
            ("aws.initial-access.console-login-without-mfa.json", "ConsoleLogin", &["CloudWatch.3"]),
            ("aws.credential-access.ec2-get-password-data.json", "GetPasswordData", &["CloudWatch.2"]),
            ("aws.defense-evasion.organizations-leave.json", "LeaveOrganization", &["CloudWatch.2"]),
            ("aws.defense-evasion.vpc-remove-flow-logs.json", "DeleteFlowLogs", &[]),
        ];
        for (file, event, rules) in want {
            let records: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            let matching: Vec<&Value> = records.iter().filter(|r| r["eventName"] == *event).collect();
            assert!(!matching.is_empty(), "{file} has no {event}");
            for r in matching {
                assert_eq!(ids(r), *rules, "{file} {event}");
            }
        }
    }

    /// panther-analysis names, line by line, which of its rules each fixture should fire.
    /// Where a panther rule is a CIS metric filter, every fixture it fires on must match the CIS
    /// rule too. (Panther's rules usually also demand success; CIS counts attempts, so failed
    /// fixtures panther skips still match CIS — checked separately below.)
    #[test]
    fn panther_fixtures_that_fire_match_the_cis_rule() {
        let dir = test_records_dir().join("panther-analysis");
        let events: Vec<Value> = std::fs::read_to_string(dir.join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let labels: Vec<Value> = std::fs::read_to_string(dir.join("labels.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), labels.len());
        let map: &[(&str, &str)] = &[
            ("AWS.CloudTrail.UnauthorizedAPICall", "CloudWatch.2"),
            ("AWS.Console.LoginWithoutMFA", "CloudWatch.3"),
            ("AWS.IAM.PolicyModified", "CloudWatch.4"),
            ("AWS.CloudTrail.Created", "CloudWatch.5"),
            ("AWS.CloudTrail.Stopped", "CloudWatch.5"),
            ("AWS.KMS.CustomerManagedKeyLoss", "CloudWatch.7"),
            ("AWS.S3.BucketPolicyModified", "CloudWatch.8"),
            ("AWS.ConfigService.Created", "CloudWatch.9"),
            ("AWS.ConfigService.DisabledDeleted", "CloudWatch.9"),
            ("AWS.EC2.SecurityGroupModified", "CloudWatch.10"),
            ("AWS.EC2.NetworkACLModified", "CloudWatch.11"),
            ("AWS.EC2.GatewayModified", "CloudWatch.12"),
            ("AWS.EC2.RouteTableModified", "CloudWatch.13"),
            ("AWS.EC2.VPCModified", "CloudWatch.14"),
            ("AWS.Root.Activity", "CloudWatch.1"),
            ("AWS.Console.RootLogin", "CloudWatch.1"),
        ];
        let mut checked = 0;
        for (event, label) in events.iter().zip(&labels) {
            let Some((_, cis)) = map.iter().find(|(p, _)| label["rule_id"] == *p) else { continue };
            if label["expected"] == true {
                assert!(
                    ids(event).contains(cis),
                    "line {}: {} fires, {cis} should match",
                    label["line"],
                    label["rule_id"]
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} fixtures checked");

        // Failed attempts panther ignores but CIS counts; and records CIS must not count.
        let line = |n: usize| &events[n];
        assert!(ids(line(49)).contains(&"CloudWatch.5"), "failed StopLogging");
        assert!(ids(line(182)).contains(&"CloudWatch.4"), "failed DeleteGroupPolicy");
        assert!(ids(line(208)).contains(&"CloudWatch.7"), "failed DisableKey");
        assert!(
            ids(line(328)).contains(&"CloudWatch.8") && ids(line(328)).contains(&"CloudWatch.2"),
            "denied PutBucketAcl"
        );
        assert!(ids(line(316)).contains(&"CloudWatch.1"), "root CreateServiceLinkedRole");
        assert!(!ids(line(318)).contains(&"CloudWatch.1"), "IAM user, invoked by sign-in");
        assert!(ids(line(51)).contains(&"CloudWatch.6"), "Failed authentication");
        assert!(!ids(line(73)).contains(&"CloudWatch.6"), "a failure without the message is not CIS's pattern");
        assert!(!ids(line(72)).contains(&"CloudWatch.3"), "MFA used");
        assert!(ids(line(76)).contains(&"CloudWatch.3"), "assumed role without MFA still counts in CIS 1.2");
    }
}
