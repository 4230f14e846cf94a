//! The TOML front end and validation: never panic or hang; every rejection is a list of
//! one-line messages with a file:line:column; an accepted file compiles (or reports a
//! capacity error) and its TOML output reads back as the same rule set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sg_rules::{AwsContext, Format, check_diagnostics, compile, parse_str, toml_out};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_str("fuzz.toml", text, Format::Toml, &AwsContext::default()) {
        Ok(rs) => {
            let _ = compile::compile(&rs);
            let out = toml_out::to_toml(&rs);
            let again = parse_str("out.toml", &out, Format::Toml, &AwsContext::default())
                .unwrap_or_else(|e| panic!("sgctl's own output does not read back: {e}\n{out}"));
            assert_eq!(again.without_locations(), rs.without_locations(), "{out}");
        }
        Err(errs) => check_diagnostics(&errs),
    }
});
