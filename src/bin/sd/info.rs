//! `sd info IMG`: the generation parameters a PNG carries.

use sd_core::{Error, Result};
use stable_diffusion::png::{PARAMETERS_KEY, read_parameters};

use crate::cli::InfoArgs;
use crate::stdout::print;

pub fn run(args: InfoArgs) -> Result<()> {
    match read_parameters(&args.image)? {
        Some(text) => print(&format!("{text}\n")),
        None => Err(Error::invalid_argument(
            args.image.display().to_string(),
            format!("has no `{PARAMETERS_KEY}` text chunk (not written by sd or A1111)"),
        )),
    }
}
