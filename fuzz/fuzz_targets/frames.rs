//! Stream bytes from a peer through every frame decoder and the CDN manifest decoder: must never
//! panic or over-allocate.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use top_proto::cdn::{Cid, Manifest};
use top_proto::cdn_wire::{CdnReply, CdnRequest};
use top_proto::frame::{
    FrameCodec, LinkFrame, Open, PipeReply, RealtimeReply, SessionFrame, decode_body,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<SessionFrame>(data);
    let _ = decode_body::<LinkFrame>(data);
    let _ = decode_body::<Open>(data);
    let _ = decode_body::<PipeReply>(data);
    let _ = decode_body::<RealtimeReply>(data);
    let _ = decode_body::<CdnRequest>(data);
    let _ = decode_body::<CdnReply>(data);
    if let Ok(m) = Manifest::decode(data) {
        // A manifest that decodes re-encodes to the same bytes and its ranges stay in the file.
        assert_eq!(m.encode(), data);
        for i in 0..m.chunk_count() {
            let r = m.chunk_range(i).unwrap();
            assert!(r.start < r.end && r.end <= m.size);
        }
        let _ = Manifest::decode_for(&Cid([0; 32]), data);
    }
    let mut codec = FrameCodec::<SessionFrame>::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
});
