//! A VPN peer's bytes: tunnel handshakes, datagrams (with a live key and replay window), the
//! control stream's frames, an exit's signed received counts, a forward stream's frames (the
//! entry's reply, the client's delivery counts), proxied-connect requests and the
//! packet checks; realtime pipes' handshakes, key confirmations and datagrams (same keys, behind
//! a flow id): must never panic.
#![no_main]

use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use top_proto::frame::decode_body;
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::vpn::cipher::{DatagramOpener, Lease, Lease6, TunnelInitiator, TunnelResponder};
use top_proto::vpn::packet::{ip_endpoints, ipv4_endpoints};
use top_proto::vpn::{ConnectReply, ConnectRequest, VpnFrame};

struct Keys {
    exit: Identity,
    exit_id: AccountId,
    client: Identity,
    opener: Mutex<DatagramOpener>,
    realtime: Mutex<top_proto::realtime::RealtimeOpener>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let (client, exit) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
    let (init, first) = TunnelInitiator::start(&client, &exit.account_id()).unwrap();
    let lease = Lease {
        addr: [10, 77, 0, 2],
        prefix: 24,
        gateway: [10, 77, 0, 1],
        dns: None,
        mtu: 1380,
        v6: Some(Lease6 {
            addr: [
                0xfd, 0x54, 0x6f, 0x70, 0x76, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
            ],
            prefix: 64,
            gateway: [
                0xfd, 0x54, 0x6f, 0x70, 0x76, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
        }),
    };
    let (reply, exit_keys) = TunnelResponder::read(&exit, &first)
        .unwrap()
        .reply(&lease)
        .unwrap();
    drop(init.finish(&reply).unwrap());
    let (_, opener) = exit_keys.split();
    let (start, first) =
        top_proto::realtime::RealtimeInitiator::start(&client, &exit.account_id()).unwrap();
    let (reply, realtime) = top_proto::realtime::respond(&exit, &first).unwrap();
    drop(start.finish(&reply).unwrap());
    let (_, realtime) = realtime.split();
    Keys {
        exit_id: exit.account_id(),
        exit,
        client,
        opener: Mutex::new(opener),
        realtime: Mutex::new(realtime),
    }
});

fuzz_target!(|data: &[u8]| {
    let keys = &*KEYS;
    let mut out = vec![0u8; 2048];
    let _ = keys.opener.lock().unwrap().open(data, &mut out);
    // Into a buffer without room for the tag (the opener's own buffer).
    let exact = data.len().saturating_sub(top_proto::vpn::cipher::OVERHEAD);
    let _ = keys
        .opener
        .lock()
        .unwrap()
        .open(data, &mut out[..exact.min(2048)]);
    // Reading a handshake costs a key exchange too: only for inputs that ask for it.
    if data.first() == Some(&0xF2) {
        let _ = TunnelResponder::read(&keys.exit, &data[1..]);
        let _ = top_proto::realtime::respond(&keys.exit, &data[1..]);
    }
    // A handshake reply costs a key exchange: only for inputs that ask for it.
    if data.first() == Some(&0xF1)
        && let Ok((init, _)) = TunnelInitiator::start(&keys.client, &keys.exit_id)
    {
        let _ = init.finish(&data[1..]);
    }
    let _ = ipv4_endpoints(data);
    let _ = ip_endpoints(data);
    let _ = decode_body::<VpnFrame>(data);
    // An exit's received counts (checking the signature only for inputs that ask for it).
    if let Ok(received) = decode_body::<top_proto::vpn::received::Received>(data)
        && data.first() == Some(&0xF3)
    {
        let _ = received.check(&keys.exit_id, &received.body.session);
    }
    // A forward stream: the entry's reply, the client's counts (the exit's inside, checked).
    let _ = decode_body::<top_proto::vpn::forward::ForwardReply>(data);
    if let Ok(counts) = decode_body::<top_proto::vpn::forward::Delivered>(data)
        && let Some(exit) = &counts.down
        && data.first() == Some(&0xF4)
    {
        let _ = exit.check(&keys.exit_id, &exit.body.session);
    }
    let _ = top_proto::realtime::flow_of(data);
    let _ = keys.realtime.lock().unwrap().open(data, &mut out);
    let _ = keys.realtime.lock().unwrap().check_confirmation(data);
    let _ = postcard::from_bytes::<ConnectRequest>(data);
    let _ = postcard::from_bytes::<ConnectReply>(data);
});
