//! A NATS JetStream cluster of the test's own: three nats-server processes (the OS's, 2.9) with
//! clustering and JetStream, on free ports, each with its own storage, which survives a crash.
//! Nodes are crashed the way machines crash (SIGKILL) and started again on the same storage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;

use crate::faults::{nats_server_binary, scratch, wait_port};
use crate::poll_for;
use crate::processes::free_addr;

/// One node: its name, ports and storage, and its process while it runs.
struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// Three nats-server nodes in one cluster (`scimtest`), removed when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream answers (a meta leader is elected).
    pub async fn start() -> NatsCluster {
        let dir = scratch("natscluster");
        let routes: Vec<u16> = (0..3).map(|_| free_addr().port()).collect();
        let route_urls: Vec<String> = routes.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let nodes = (0..3)
            .map(|i| {
                let name = format!("n{i}");
                let port = free_addr().port();
                let store = dir.join(&name);
                let config = dir.join(format!("{name}.conf"));
                let text = format!(
                    "server_name: \"{name}\"\nlisten: \"127.0.0.1:{port}\"\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{\n  name: \"scimtest\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes[i],
                    route_urls.join(", ")
                );
                std::fs::write(&config, text).expect("write a node's configuration");
                Node { name, port, config, child: None }
            })
            .collect();
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..3 {
            cluster.start_node(i);
        }
        let url = cluster.url();
        poll_for(Duration::from_secs(60), "the NATS cluster's JetStream to answer", || async {
            // The account's JetStream info, raw (async-nats parses it for newer servers than 2.9).
            let client = crate::try_connect_as(&url).await.ok()?;
            let reply = client.request("$JS.API.INFO", "".into()).await.ok()?;
            let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
            info.get("error").is_none().then_some(())
        })
        .await;
        cluster
    }

    /// Every node's URL, comma-separated: what the services' `NATS_URL` lists.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// Starts node `i` (again, on its storage), waiting until it accepts connections.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already runs", node.name);
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
        wait_port(node.port, &node.name);
    }

    /// SIGKILL of node `i`, as a machine crash would end it, and waits for it to go.
    pub fn kill_node(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("a running node");
        let status = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let _ = child.wait();
    }

    /// The node that leads `stream` now (stream info names it by server name).
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let url = self.url();
        let name = poll_for(Duration::from_secs(60), &format!("a leader of {stream}"), || async {
            let client = crate::try_connect_as(&url).await.ok()?;
            let mut s = jetstream::new(client).get_stream(stream).await.ok()?;
            s.info().await.ok()?.cluster.as_ref()?.leader.clone()
        })
        .await;
        self.nodes.iter().position(|n| n.name == name).expect("the leader is one of the nodes")
    }

    /// How many replicas `stream` has, and how many of its peers are current, per stream info;
    /// `None` while the stream has no leader to answer.
    pub async fn replicas(&self, stream: &str) -> Option<(usize, usize)> {
        let client = crate::try_connect_as(&self.url()).await.ok()?;
        let mut s = jetstream::new(client).get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let current = info.cluster.as_ref().map_or(0, |c| c.replicas.iter().filter(|p| p.current).count());
        Some((info.config.num_replicas, current))
    }

    /// Waits until `stream` has a leader again and every other replica is current (after nodes
    /// came back).
    pub async fn wait_current(&self, stream: &str) {
        poll_for(Duration::from_secs(120), &format!("every replica of {stream} to be current"), || async {
            let (replicas, current) = self.replicas(stream).await?;
            // The leader is not among the peers listed as replicas.
            (current + 1 >= replicas).then_some(())
        })
        .await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
