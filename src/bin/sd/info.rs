//! `sd info IMG`: the generation parameters a PNG carries, read by the infotext parser
//! (`stable_diffusion::infotext`, A1111's rules) and printed back in A1111's form, or as JSON
//! with `--json`.

use sd_core::{Error, Result};
use serde_json::{Value, json};
use stable_diffusion::infotext::Infotext;
use stable_diffusion::png::{PARAMETERS_KEY, read_parameters};

use crate::cli::InfoArgs;
use crate::stdout::print;

pub fn run(args: InfoArgs) -> Result<()> {
    let Some(text) = read_parameters(&args.image)? else {
        return Err(Error::invalid_argument(
            args.image.display().to_string(),
            format!("has no `{PARAMETERS_KEY}` text chunk (not written by sd or A1111)"),
        ));
    };
    let parsed = Infotext::parse(&text);
    if args.json {
        print(&format!("{}\n", as_json(&parsed)))
    } else {
        print(&format!("{}\n", parsed.to_text()))
    }
}

/// `{"prompt", "negative_prompt", "parameters": [[key, value], …]}`: the pairs in the file's
/// order, values unquoted.
fn as_json(parsed: &Infotext) -> Value {
    let parameters: Vec<Value> = parsed
        .fields
        .iter()
        .map(|(key, value)| json!([key, value]))
        .collect();
    json!({
        "prompt": parsed.prompt,
        "negative_prompt": parsed.negative_prompt,
        "parameters": parameters,
    })
}
