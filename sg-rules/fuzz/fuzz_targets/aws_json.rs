//! The AWS JSON front end: never panic or hang; every rejection has file:line:column.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sg_rules::{AwsContext, Format, check_diagnostics, compile, parse_str};

const MEMBERS: &str = "[groups.sg-1]\nmembers = [\"192.0.2.1\"]\n[prefix_lists.pl-1]\nentries = [\"203.0.113.0/28\"]\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ctx = AwsContext {
        bindings: vec!["eth0=sg-1".parse().unwrap()],
        members: Some(("members.toml".into(), MEMBERS.into())),
        ..AwsContext::default()
    };
    match parse_str("fuzz.json", text, Format::Aws, &ctx) {
        Ok(rs) => {
            let _ = compile::compile(&rs);
        }
        Err(errs) => check_diagnostics(&errs),
    }
});
