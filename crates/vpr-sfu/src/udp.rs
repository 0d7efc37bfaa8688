//! Batched datagram I/O on the media socket (Linux).
//!
//! One `recvmmsg` call reads up to [`RECV_BATCH`] datagrams, each with the
//! kernel's receive timestamp (`SO_TIMESTAMPNS`), so the worker can measure
//! how long a packet spent in the server, its wait in the socket's receive
//! queue included. One `sendmmsg` call sends what one pass of the worker
//! wrote, for example a publisher's packet fanned out to 30 subscribers,
//! instead of one system call per datagram.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

/// Datagrams read by one receive call.
pub const RECV_BATCH: usize = 64;
/// Largest datagram the media port accepts; longer ones arrive truncated.
pub const DATAGRAM_CAPACITY: usize = 2048;
/// Datagrams handed to the kernel by one send call.
const SEND_BATCH: usize = 256;
/// Room for one `SCM_TIMESTAMPNS` control message, in 8-byte words.
const CONTROL_WORDS: usize = 8;

/// Turns on kernel receive timestamps (`SO_TIMESTAMPNS`) on a socket.
pub fn enable_receive_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram of a receive batch.
#[derive(Debug)]
pub struct Received<'a> {
    pub data: &'a [u8],
    pub from: SocketAddr,
    /// When the kernel queued it on the socket; `None` without timestamps.
    pub arrived: Option<SystemTime>,
    /// Longer than [`DATAGRAM_CAPACITY`]: `data` contains only its start.
    pub truncated: bool,
}

/// Buffers for one `recvmmsg` call, reused from call to call.
pub struct RecvBatch {
    buffers: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` point into the
// batch's own vectors and are rebuilt before every call that uses them.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buffers: vec![0; RECV_BATCH * DATAGRAM_CAPACITY],
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            names: vec![unsafe { mem::zeroed() }; RECV_BATCH],
            controls: vec![[0; CONTROL_WORDS]; RECV_BATCH],
            iovecs: Vec::with_capacity(RECV_BATCH),
            headers: Vec::with_capacity(RECV_BATCH),
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Reads the datagrams waiting on `fd` without blocking; returns how
    /// many arrived, or `WouldBlock` when none were waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        self.iovecs.clear();
        self.headers.clear();

        for (buffer, (name, control)) in self
            .buffers
            .chunks_exact_mut(DATAGRAM_CAPACITY)
            .zip(self.names.iter_mut().zip(self.controls.iter_mut()))
        {
            self.iovecs.push(libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: DATAGRAM_CAPACITY });
            // SAFETY: all-zero bytes are a valid msghdr.
            let mut header: libc::msghdr = unsafe { mem::zeroed() };
            header.msg_name = (name as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = mem::size_of_val(control) as _;
            self.headers.push(libc::mmsghdr { msg_hdr: header, msg_len: 0 });
        }
        // The iovecs are complete now, so pointers into them stay valid.
        for (header, iovec) in self.headers.iter_mut().zip(self.iovecs.iter_mut()) {
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }

        // SAFETY: every header points at a buffer, name and control area
        // of the sizes it declares, all owned by `self` for the call.
        let received = unsafe {
            libc::recvmmsg(fd, self.headers.as_mut_ptr(), RECV_BATCH as _, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        self.count = received as usize;
        Ok(self.count)
    }

    /// The datagrams the last [`recv`](Self::recv) read, in arrival order;
    /// one whose sender address is not IPv4 or IPv6 is skipped.
    pub fn iter(&self) -> impl Iterator<Item = Received<'_>> {
        self.headers[..self.count].iter().enumerate().filter_map(|(index, header)| {
            let len = (header.msg_len as usize).min(DATAGRAM_CAPACITY);
            let start = index * DATAGRAM_CAPACITY;
            Some(Received {
                data: &self.buffers[start..start + len],
                from: socket_addr_from(&self.names[index])?,
                arrived: receive_timestamp(&header.msg_hdr),
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            })
        })
    }
}

/// Outcome of one [`SendQueue::flush`].
#[derive(Debug, Default)]
pub struct Flushed {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams the kernel rejected, and the last error.
    pub failed: u64,
    pub error: Option<io::Error>,
}

/// Datagrams written by the peer connections during one pass of the worker,
/// sent together by [`flush`](Self::flush).
#[derive(Default)]
pub struct SendQueue {
    datagrams: Vec<(BytesMut, SocketAddr)>,
    names: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` point into the
// queue's own vectors and are rebuilt before every call that uses them.
unsafe impl Send for SendQueue {}

impl SendQueue {
    pub fn push(&mut self, data: BytesMut, to: SocketAddr) {
        self.datagrams.push((data, to));
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Sends every queued datagram on `fd`. A datagram the kernel rejects
    /// is dropped, as a lossy network would drop it. When the socket's send
    /// buffer is full, the rest of the queue is dropped too.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut flushed = Flushed::default();
        let mut next = 0;
        while next < self.datagrams.len() {
            let end = (next + SEND_BATCH).min(self.datagrams.len());
            match self.send_range(fd, next, end) {
                Ok(sent) => {
                    for (data, _) in &self.datagrams[next..next + sent] {
                        flushed.datagrams += 1;
                        flushed.bytes += data.len() as u64;
                    }
                    next += sent.max(1);
                    if sent == 0 {
                        flushed.failed += 1;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    flushed.failed += (self.datagrams.len() - next) as u64;
                    flushed.error = Some(err);
                    break;
                }
                Err(err) => {
                    // The first datagram of the range was refused (for
                    // example an address the kernel cannot route): drop it
                    // and go on with the next.
                    flushed.failed += 1;
                    flushed.error = Some(err);
                    next += 1;
                }
            }
        }
        self.datagrams.clear();
        flushed
    }

    fn send_range(&mut self, fd: RawFd, start: usize, end: usize) -> io::Result<usize> {
        self.names.clear();
        self.iovecs.clear();
        self.headers.clear();
        for (data, to) in &self.datagrams[start..end] {
            self.names.push(socket_addr_to(to));
            self.iovecs.push(libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() });
        }
        for (name, iovec) in self.names.iter_mut().zip(self.iovecs.iter_mut()) {
            // SAFETY: all-zero bytes are a valid msghdr.
            let mut header: libc::msghdr = unsafe { mem::zeroed() };
            header.msg_name = (&mut name.0 as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = name.1;
            header.msg_iov = iovec;
            header.msg_iovlen = 1;
            self.headers.push(libc::mmsghdr { msg_hdr: header, msg_len: 0 });
        }
        // SAFETY: every header points at a name and one iovec owned by
        // `self`, and each iovec at a queued datagram, all live for the call.
        // The kernel only reads the datagrams.
        let sent = unsafe { libc::sendmmsg(fd, self.headers.as_mut_ptr(), self.headers.len() as _, libc::MSG_DONTWAIT) };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}

fn receive_timestamp(header: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: the kernel filled the control area `header` points at and set
    // its length; the CMSG macros stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let stamp: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(UNIX_EPOCH + Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

fn socket_addr_from(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family AF_INET means the storage contains a sockaddr_in.
            let v4: &libc::sockaddr_in = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family AF_INET6 means the storage contains a sockaddr_in6.
            let v6: &libc::sockaddr_in6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(v6.sin6_port), v6.sin6_flowinfo, v6.sin6_scope_id)))
        }
        _ => None,
    }
}

fn socket_addr_to(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin: &mut libc::sockaddr_in = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            sin6.sin6_scope_id = v6.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn bound(addr: &str) -> UdpSocket {
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        socket
    }

    #[test]
    fn recv_batch_reads_senders_and_timestamps() {
        let server = bound("127.0.0.1:0");
        enable_receive_timestamps(server.as_raw_fd()).unwrap();
        let a = bound("127.0.0.1:0");
        let b = bound("127.0.0.1:0");
        let before = SystemTime::now();
        a.send_to(b"first", server.local_addr().unwrap()).unwrap();
        b.send_to(&[7u8; 3000], server.local_addr().unwrap()).unwrap();
        a.send_to(b"third", server.local_addr().unwrap()).unwrap();

        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            match batch.recv(server.as_raw_fd()) {
                Ok(_) => got.extend(batch.iter().map(|r| (r.data.to_vec(), r.from, r.arrived, r.truncated))),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => panic!("recvmmsg failed: {err}"),
            }
            if got.len() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].0.as_slice(), got[0].1, got[0].3), (&b"first"[..], a.local_addr().unwrap(), false));
        assert_eq!((got[1].0.len(), got[1].1, got[1].3), (DATAGRAM_CAPACITY, b.local_addr().unwrap(), true));
        assert_eq!((got[2].0.as_slice(), got[2].1), (&b"third"[..], a.local_addr().unwrap()));
        for (_, _, arrived, _) in &got {
            let arrived = arrived.expect("kernel timestamp");
            assert!(arrived >= before - Duration::from_millis(1), "{arrived:?} before the first send");
            assert!(arrived <= SystemTime::now(), "{arrived:?} in the future");
        }
    }

    #[test]
    fn recv_batch_on_empty_socket_would_block() {
        let server = bound("127.0.0.1:0");
        let err = RecvBatch::default().recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn send_queue_reaches_ipv4_and_ipv6() {
        let server = bound("127.0.0.1:0");
        let v4 = bound("127.0.0.1:0");
        // More than one send call's worth, within the receiver's buffer.
        socket2::SockRef::from(&v4).set_recv_buffer_size(1 << 20).unwrap();
        let mut queue = SendQueue::default();
        for n in 0..260u16 {
            queue.push(BytesMut::from(&n.to_be_bytes()[..]), v4.local_addr().unwrap());
        }
        let flushed = queue.flush(server.as_raw_fd());
        assert_eq!((flushed.datagrams, flushed.bytes, flushed.failed), (260, 520, 0));
        assert!(queue.is_empty());
        let mut buf = [0u8; 16];
        for n in 0..260u16 {
            let (len, from) = v4.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..len], from), (&n.to_be_bytes()[..], server.local_addr().unwrap()));
        }

        let Ok(server6) = UdpSocket::bind("[::1]:0") else { return };
        let peer6 = bound("[::1]:0");
        queue.push(BytesMut::from(&b"six"[..]), peer6.local_addr().unwrap());
        assert_eq!(queue.flush(server6.as_raw_fd()).datagrams, 1);
        let (len, from) = peer6.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"six"[..], server6.local_addr().unwrap()));
    }

    #[test]
    fn send_queue_drops_rejected_datagram() {
        let server = bound("127.0.0.1:0");
        let peer = bound("127.0.0.1:0");
        let mut queue = SendQueue::default();
        queue.push(BytesMut::from(&b"one"[..]), peer.local_addr().unwrap());
        // An IPv6 destination on an IPv4 socket: the kernel refuses it.
        queue.push(BytesMut::from(&b"bad"[..]), "[::1]:9".parse().unwrap());
        queue.push(BytesMut::from(&b"two"[..]), peer.local_addr().unwrap());
        let flushed = queue.flush(server.as_raw_fd());
        assert_eq!((flushed.datagrams, flushed.failed), (2, 1));
        assert!(flushed.error.is_some());
        let mut buf = [0u8; 16];
        let (len, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"one");
        let (len, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"two");
    }
}
