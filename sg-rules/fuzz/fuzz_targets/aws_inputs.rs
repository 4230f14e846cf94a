//! The inputs beside AWS JSON (`--network-interfaces`, `--prefix-lists`): never panic or
//! hang; every rejection has file:line:column. The first byte picks which input the rest is:
//! describe-network-interfaces, describe-prefix-lists, or get-managed-prefix-list-entries
//! (given as `pl-1=FILE`). The security groups are fixed and reference both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sg_rules::{AwsContext, Format, aws::PrefixListInput, check_diagnostics, compile, parse_str};

const GROUPS: &str = r#"{"SecurityGroups": [
 {"GroupId": "sg-1", "GroupName": "web", "VpcId": "vpc-1",
  "IpPermissions": [
   {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1"}, {"GroupId": "sg-2"}]},
   {"IpProtocol": "tcp", "FromPort": 9100, "ToPort": 9100, "PrefixListIds": [{"PrefixListId": "pl-1"}]}]}]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut ctx = AwsContext { bindings: vec!["eth0=sg-1".parse().unwrap()], ..AwsContext::default() };
    match which % 3 {
        0 => ctx.network_interfaces = vec![("enis.json".into(), text.into())],
        1 => ctx.prefix_lists = vec![PrefixListInput { id: None, file: "pl.json".into(), text: text.into() }],
        _ => {
            ctx.prefix_lists =
                vec![PrefixListInput { id: Some("pl-1".into()), file: "pl.json".into(), text: text.into() }];
        }
    }
    match parse_str("sg.json", GROUPS, Format::Aws, &ctx) {
        Ok(rs) => {
            let _ = compile::compile(&rs);
        }
        Err(errs) => check_diagnostics(&errs),
    }
});
