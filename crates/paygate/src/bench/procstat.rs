//! CPU time of another process from /proc, for "gateway CPU seconds per operation", and
//! finding the process that listens on a TCP port.

use std::collections::BTreeMap;
use std::path::Path;

/// Linux reports /proc/<pid>/stat times in USER_HZ, which is 100 on every supported arch.
const USER_HZ: f64 = 100.0;

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    stat_cpu_seconds(stat.get(stat.rfind(')')? + 2..)?)
}

/// utime + stime from a stat line's fields after the `(name) `.
fn stat_cpu_seconds(rest: &str) -> Option<f64> {
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime is field 14 of the full line, i.e. index 11 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds of each of `pid`'s threads, by thread id, with the thread's group: its name
/// without a trailing number (`sqlite-reader-1` → `sqlite-reader`), so a pool reads as one.
pub fn cpu_seconds_by_thread(pid: u32) -> Option<BTreeMap<u32, (String, f64)>> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or_default();
        let Some(cpu) = stat.get(close + 2..).and_then(stat_cpu_seconds) else {
            continue;
        };
        threads.insert(tid, (thread_group(name), cpu));
    }
    Some(threads)
}

/// Each group's CPU seconds between two [`cpu_seconds_by_thread`] readings. A thread started
/// in between counts from zero; one that ended in between is missing (its time is lost).
pub fn cpu_seconds_by_group(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
) -> BTreeMap<String, f64> {
    let mut groups = BTreeMap::new();
    for (tid, (group, cpu)) in after {
        let was = before.get(tid).map_or(0.0, |(_, c)| *c);
        *groups.entry(group.clone()).or_insert(0.0) += (cpu - was).max(0.0);
    }
    groups
}

fn thread_group(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = if trimmed.len() < name.len() {
        trimmed.trim_end_matches(['-', '_', '#'])
    } else {
        trimmed
    };
    if trimmed.is_empty() { name } else { trimmed }.to_string()
}

/// The pid of the process with a socket listening on `port` (IPv4 or IPv6), if visible.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN; inode is column 9.
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.to_string_lossy() == *i) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time_and_finds_its_own_listener() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(me).unwrap() >= before);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(me));
    }

    #[test]
    fn a_named_thread_s_cpu_shows_under_its_group() {
        let me = std::process::id();
        let before = cpu_seconds_by_thread(me).unwrap();
        let burner = std::thread::Builder::new()
            .name("burner-7".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                // Busy for 300 ms of wall time: at least a few ticks of CPU.
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    for i in 0..100_000u64 {
                        x = x.wrapping_add(i * i);
                    }
                }
                // Read while the thread is alive: an ended thread leaves /proc.
                let after = cpu_seconds_by_thread(std::process::id()).unwrap();
                (x, after)
            })
            .unwrap();
        let (x, after) = burner.join().unwrap();
        assert!(x != 1);
        let groups = cpu_seconds_by_group(&before, &after);
        assert!(groups["burner"] >= 0.1, "{groups:?}");
        let whole: f64 = groups.values().sum();
        assert!(whole >= groups["burner"]);
    }

    #[test]
    fn a_thread_s_group_is_its_name_without_a_trailing_number() {
        assert_eq!(thread_group("sqlite-reader-12"), "sqlite-reader");
        assert_eq!(thread_group("sqlite-writer"), "sqlite-writer");
        assert_eq!(thread_group("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(thread_group("worker3"), "worker");
        assert_eq!(thread_group("42"), "42");
    }
}
