//! A network namespace per test, for servers the API server must reach through its proxy.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

/// A test host: a network namespace of this test's own, joined to the host by a veth pair with
/// private addresses. The API server refuses Service endpoints on loopback, so a server the API
/// server must reach through its service proxy listens here. Deleted when dropped.
pub struct TestHost {
    name: String,
    guest: Ipv4Addr,
}

impl TestHost {
    /// Creates the namespace and the veth pair; needs root (CAP_NET_ADMIN) and iproute2.
    pub fn create() -> anyhow::Result<TestHost> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // A /30 per host inside 10.213.0.0/16, unique per process and call.
        let slot = (std::process::id()
            .wrapping_mul(64)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
            % 16384;
        let name = format!("mr{slot:04x}");
        let base = 0x0ad5_0000 + slot * 4; // 10.213.0.0 + 4 * slot
        let (host, guest) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let (outside, inside) = (format!("{name}h"), format!("{name}n"));
        let created = TestHost {
            name: name.clone(),
            guest,
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &name])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &outside])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{guest}/30"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &name, "link", "set", &inside, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(created)
    }

    /// The test host's address.
    pub fn address(&self) -> Ipv4Addr {
        self.guest
    }

    /// A TCP listener on the test host's address, opened inside its namespace.
    pub fn listen(&self, port: u16) -> anyhow::Result<std::net::TcpListener> {
        let path = format!("/run/netns/{}", self.name);
        let address = self.guest;
        // setns applies to the calling thread only: a short-lived thread enters the namespace,
        // binds, and ends; the socket stays in the namespace it was created in.
        std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
            let namespace =
                std::fs::File::open(&path).with_context(|| format!("failed to open {path}"))?;
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("failed to enter the test host's network namespace")?;
            let listener = std::net::TcpListener::bind((address, port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        if ip(&["netns", "del", &self.name]).is_err() {
            eprintln!("warning: failed to delete network namespace {}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("failed to run ip")?;
    anyhow::ensure!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
