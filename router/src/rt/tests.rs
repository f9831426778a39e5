//! The loop against real sockets and threads.

use std::io::Write;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn listener() -> (TcpListener, std::net::SocketAddr) {
    let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = std.local_addr().expect("addr");
    (TcpListener::from_std(std).expect("register"), addr)
}

/// Data and the peer's FIN often arrive before the loop reads: the short
/// read that takes the data must not lose the EOF behind it (epoll raises
/// no second edge for it).
#[test]
fn eof_behind_a_short_read_is_seen() {
    block_on(async {
        let (listener, addr) = listener();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"hello").expect("write");
            s.shutdown(Shutdown::Write).expect("shutdown");
            std::thread::sleep(Duration::from_millis(500));
        });
        let (mut stream, _) = listener.accept().await.expect("accept");
        time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"hello");
        let eof = time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert_eq!(eof.expect("EOF seen, not waited for").expect("read"), 0);
        peer.join().expect("peer");
    })
    .expect("loop runs");
}

/// Both directions through the loop, with more data than a socket buffer
/// holds, so writes wait for room and reads for data.
#[test]
fn large_transfer_round_trips() {
    const LEN: usize = 8 * 1024 * 1024;
    block_on(async {
        let (listener, addr) = listener();
        spawn_local(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf).await.expect("echo read");
                if n == 0 {
                    s.shutdown().await.expect("shutdown");
                    return;
                }
                s.write_all(&buf[..n]).await.expect("echo write");
            }
        });
        let client = connect("127.0.0.1", addr.port()).await.expect("connect");
        let (mut reader, mut writer) = tokio::io::split(client);
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let done = Rc::new(std::cell::Cell::new(false));
        let flag = done.clone();
        spawn_local(async move {
            writer.write_all(&sent).await.expect("write");
            writer.shutdown().await.expect("shutdown");
            flag.set(true);
        });
        let mut back = Vec::with_capacity(LEN);
        reader.read_to_end(&mut back).await.expect("read back");
        assert!(done.get());
        assert!(back == data, "echoed bytes differ");
    })
    .expect("loop runs");
}

/// A wake-up from another thread reaches the loop while it blocks in epoll.
#[test]
fn wake_from_another_thread() {
    let value = block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let _ = tx.send(42);
        });
        rx.await.expect("sent")
    })
    .expect("loop runs");
    assert_eq!(value, 42);
}

/// Tasks still pending when the main future ends are dropped with the loop.
#[test]
fn pending_tasks_are_dropped_at_the_end() {
    struct Flag(Rc<std::cell::Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(std::cell::Cell::new(false));
    let flag = Flag(dropped.clone());
    block_on(async move {
        spawn_local(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        time::sleep(Duration::from_millis(10)).await;
    })
    .expect("loop runs");
    assert!(dropped.get());
    assert!(!is_current());
}

#[test]
fn refused_connection_is_an_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let result = block_on(async move { connect("127.0.0.1", port).await.map(|_| ()) }).expect("loop runs");
    assert_eq!(result.expect_err("nothing listens").kind(), std::io::ErrorKind::ConnectionRefused);
}

/// A host name is resolved (on a thread of its own) before connecting;
/// `localhost` comes from /etc/hosts, so no query leaves the machine.
#[test]
fn connects_by_name() {
    block_on(async {
        let (listener, addr) = listener();
        spawn_local(async move {
            let _ = listener.accept().await;
        });
        let stream = connect("localhost", addr.port()).await.expect("connect to localhost");
        assert_eq!(stream.peer_addr().expect("peer").port(), addr.port());
    })
    .expect("loop runs");
}
