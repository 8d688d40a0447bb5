//! Commands that change the host's network, run one by one with clear errors.

use std::io::Write;
use std::process::{Command, Stdio};

/// Why a network change failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The process lacks the rights (root or `CAP_NET_ADMIN`); these commands would do it.
    #[error(
        "this needs root or CAP_NET_ADMIN; run as root, or run these commands yourself:\n{commands}"
    )]
    NeedsRights {
        /// The commands, one per line.
        commands: String,
    },
    /// A tool is not installed.
    #[error("`{tool}` is not installed (Debian: apt-get install {package})")]
    Missing {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// Which file or device.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Input the host gave back was not understood.
    #[error("{0}")]
    Parse(String),
}

/// One command: a program, its arguments and optional standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    program: &'static str,
    args: Vec<String>,
    stdin: Option<String>,
}

/// The Debian package each tool comes from.
fn package_of(program: &str) -> &'static str {
    match program {
        "nft" => "nftables",
        _ => "iproute2",
    }
}

impl Cmd {
    /// `ip ARGS…`.
    pub fn ip(args: &[&str]) -> Self {
        Self {
            program: "ip",
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
        }
    }

    /// `nft -f -` reading `script`.
    pub fn nft_script(script: String) -> Self {
        Self {
            program: "nft",
            args: vec!["-f".into(), "-".into()],
            stdin: Some(script),
        }
    }

    /// `nft ARGS…`.
    pub fn nft(args: &[&str]) -> Self {
        Self {
            program: "nft",
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
        }
    }

    /// The command as a user would type it.
    pub fn display(&self) -> String {
        let line = format!("{} {}", self.program, self.args.join(" "));
        match &self.stdin {
            Some(script) => format!("{line} <<'EOF'\n{}EOF", script),
            None => line,
        }
    }

    /// Runs the command; returns its standard output.
    pub fn run(&self) -> Result<String, NetError> {
        let mut child = Command::new(self.program)
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => NetError::Missing {
                    tool: self.program,
                    package: package_of(self.program),
                },
                _ => NetError::Io {
                    what: self.program.into(),
                    source: e,
                },
            })?;
        if let (Some(script), Some(mut input)) = (&self.stdin, child.stdin.take()) {
            input
                .write_all(script.as_bytes())
                .map_err(|source| NetError::Io {
                    what: self.program.into(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| NetError::Io {
            what: self.program.into(),
            source,
        })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
            return Err(NetError::NeedsRights {
                commands: self.display(),
            });
        }
        Err(NetError::Failed {
            command: self.display(),
            stderr,
        })
    }
}

/// The start of an nftables script that replaces table `family name` whether it exists or not
/// (a left-over from a crashed run included): declare it, delete it, then the new definition.
pub fn replace_table(family: &str, name: &str) -> String {
    format!("table {family} {name} {{}}\ndelete table {family} {name}\n")
}

/// Runs `cmds` in order; on the first failure from missing rights, the error lists all of them.
pub fn run_all(cmds: &[Cmd]) -> Result<(), NetError> {
    for c in cmds {
        if let Err(e) = c.run() {
            return Err(match e {
                NetError::NeedsRights { .. } => NetError::NeedsRights {
                    commands: cmds.iter().map(Cmd::display).collect::<Vec<_>>().join("\n"),
                },
                other => other,
            });
        }
    }
    Ok(())
}

/// Whether this process may change the network (effective uid 0 is the common case).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_commands_as_typed() {
        assert_eq!(
            Cmd::ip(&["route", "add", "0.0.0.0/1", "dev", "top0"]).display(),
            "ip route add 0.0.0.0/1 dev top0"
        );
        assert!(
            Cmd::nft_script("table inet t {}\n".into())
                .display()
                .starts_with("nft -f - <<'EOF'\ntable inet t {}\nEOF")
        );
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let c = Cmd {
            program: "top-no-such-tool",
            args: vec![],
            stdin: None,
        };
        assert!(matches!(c.run(), Err(NetError::Missing { .. })));
    }
}
