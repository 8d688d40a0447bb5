//! `toprelay`'s helper commands: shell completions, the man page and `config check`.

use std::path::Path;

use anyhow::{Result, bail};
use clap::CommandFactory;

/// Prints the completion script for `shell`.
pub fn completions<C: CommandFactory>(shell: clap_complete::Shell) {
    let mut command = C::command();
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
}

/// Prints the man page (roff).
pub fn man<C: CommandFactory>() -> Result<()> {
    clap_mangen::Man::new(C::command()).render(&mut std::io::stdout())?;
    Ok(())
}

/// Checks a relay's config file, printing every problem; fails when there is one.
pub fn config_check(path: &Path) -> Result<()> {
    let problems = top_relay::node::config_check::check_file(path)?;
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return Ok(());
    }
    for p in &problems {
        println!("{}: {p}", path.display());
    }
    bail!("{} problem(s) in {}", problems.len(), path.display())
}
