//! The machine a run happened on, for the report.

use std::process::Command;

/// What the report says about the machine and toolchains.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub rustc: String,
    pub python: String,
    pub mitogen: String,
    pub date: String,
}

impl Machine {
    /// Reads it from /proc and the tools' own `--version`.
    pub fn describe(python: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
            .unwrap_or("unknown")
            .to_string();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            rustc: output("rustc", &["--version"]),
            python: output(python, &["--version"]),
            mitogen: output(
                python,
                &["-c", "import mitogen; print('.'.join(map(str, mitogen.__version__)))"],
            ),
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

fn output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) => format!("unknown ({program}: {e})"),
    }
}
