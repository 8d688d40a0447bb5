//! Stream bytes from a peer through every frame decoder: must never panic or over-allocate.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use top_proto::frame::{FrameCodec, LinkFrame, Open, PipeReply, SessionFrame, decode_body};

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<SessionFrame>(data);
    let _ = decode_body::<LinkFrame>(data);
    let _ = decode_body::<Open>(data);
    let _ = decode_body::<PipeReply>(data);
    let mut codec = FrameCodec::<SessionFrame>::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
});
