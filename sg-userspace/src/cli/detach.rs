//! `sgctl detach IFACE`

use clap::Args;

use crate::loader;

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Interface to stop protecting.
    pub iface: String,
}

pub fn run(args: &DetachArgs) -> anyhow::Result<()> {
    let report = loader::detach(&args.iface)?;
    if report.interface_gone {
        println!("{}: interface gone; removed its pins under {}", report.iface, report.pin_dir.display());
    } else {
        println!(
            "detached {}: removed links, programs and maps under {}",
            report.iface,
            report.pin_dir.display()
        );
    }
    Ok(())
}
