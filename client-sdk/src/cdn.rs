//! The CDN from the client: publish files to the relay, fetch content by id (whole or by byte
//! range, over several streams and relays: [`crate::fetch`]) as a stream of verified bytes,
//! unpublish.

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use top_billing::Service;
use top_proto::cdn::{Cid, Manifest, ManifestBuilder};
use top_proto::cdn_wire::{CdnRefusal, CdnReply, CdnRequest, MAX_CDN_FRAME};
use top_proto::frame::{FrameCodec, Open, encode_frame};
use top_proto::net::cdn_fetch::FetchError;

use ledger_lite::{AllowanceBody, Amount, ChannelId};
use top_proto::id::AccountId;

use crate::client::Client;
use crate::error::ClientError;
use crate::fetch::{Fetch, Source as FetchSource};

/// Where the bytes to publish come from.
enum Source<'a> {
    Memory(&'a [u8]),
    File(tokio::fs::File),
}

impl Source<'_> {
    async fn read(&mut self, range: Range<u64>) -> Result<Bytes, ClientError> {
        match self {
            Source::Memory(data) => Ok(Bytes::copy_from_slice(
                &data[range.start as usize..range.end as usize],
            )),
            Source::File(f) => {
                f.seek(std::io::SeekFrom::Start(range.start)).await?;
                let mut buf = vec![0; (range.end - range.start) as usize];
                f.read_exact(&mut buf).await?;
                Ok(buf.into())
            }
        }
    }
}

impl Client {
    /// Publishes `data` with this client's relay as its origin; returns its content id.
    pub async fn publish(
        &self,
        data: &[u8],
        content_type: Option<&str>,
    ) -> Result<Cid, ClientError> {
        let mut builder = ManifestBuilder::new(content_type.map(str::to_owned));
        builder.update(data);
        let manifest = builder.finish().map_err(FetchError::from)?;
        self.publish_manifest(&manifest, Source::Memory(data), &mut |_| {})
            .await
    }

    /// Publishes the file at `path` (read twice: to hash it, then to send what the relay
    /// lacks); `progress` is told the bytes hashed, then the bytes sent, as they go.
    pub async fn publish_file(
        &self,
        path: &Path,
        content_type: Option<&str>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Cid, ClientError> {
        let mut file = tokio::fs::File::open(path).await?;
        let mut builder = ManifestBuilder::new(content_type.map(str::to_owned));
        let mut buf = vec![0; 1 << 20];
        let mut hashed = 0;
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            builder.update(&buf[..n]);
            hashed += n as u64;
            progress(Progress::Hashed(hashed));
        }
        let manifest = builder.finish().map_err(FetchError::from)?;
        self.publish_manifest(&manifest, Source::File(file), progress)
            .await
    }

    async fn publish_manifest(
        &self,
        manifest: &Manifest,
        mut source: Source<'_>,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Cid, ClientError> {
        let (mut send, recv) = self.conn().open_bi().await?;
        send.write_all(&encode_frame(&Open::Cdn)?).await?;
        let mut out = FramedWrite::new(send, FrameCodec::<CdnRequest>::new(MAX_CDN_FRAME));
        out.send(CdnRequest::Put {
            manifest: manifest.encode().into(),
        })
        .await?;
        let mut frames = FramedRead::new(recv, FrameCodec::<CdnReply>::new(MAX_CDN_FRAME));
        let need = match next_reply(&mut frames).await? {
            CdnReply::Need { chunks } => chunks,
            CdnReply::Refused(why) => return Err(FetchError::Refused(why).into()),
            other => return Err(unexpected(other)),
        };
        let mut send = out.into_inner();
        let total: u64 = need
            .iter()
            .filter_map(|&i| manifest.chunk_range(i).ok())
            .map(|r| r.end - r.start)
            .sum();
        progress(Progress::Sending { sent: 0, total });
        let mut sent = 0;
        for i in need {
            let range = manifest.chunk_range(i).map_err(FetchError::from)?;
            let data = source.read(range).await?;
            sent += data.len() as u64;
            self.usage_counter().count(Service::Cdn, data.len());
            send.write_chunk(data).await?;
            progress(Progress::Sending { sent, total });
        }
        send.finish().ok();
        match next_reply(&mut frames).await? {
            CdnReply::Published { cid } if cid == manifest.cid() => Ok(cid),
            CdnReply::Refused(why) => Err(FetchError::Refused(why).into()),
            other => Err(unexpected(other)),
        }
    }

    /// Fetches the content `cid` names, whole: its bytes arrive through [`Fetch`], in order,
    /// each chunk checked against the content id before it is handed out.
    pub async fn fetch(&self, cid: &Cid) -> Result<Fetch, ClientError> {
        self.fetch_range(cid, None).await
    }

    /// Fetches bytes `range` of `cid` (`None`: all of it), over several streams at once.
    pub async fn fetch_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<Fetch, ClientError> {
        self.fetch_from(cid, range, &[]).await
    }

    /// Fetches bytes `range` of `cid` from this client's relay and the relays of `also` at
    /// once (each client pays its own relay for what it served), every chunk verified; a relay
    /// that serves bad chunks is passed over for the others.
    pub async fn fetch_from(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
        also: &[&Client],
    ) -> Result<Fetch, ClientError> {
        let sources = std::iter::once(self)
            .chain(also.iter().copied())
            .map(|c| FetchSource {
                conn: c.conn().clone(),
                usage: c.usage_counter().clone(),
            })
            .collect();
        Fetch::start(sources, cid, range).await
    }

    /// Pays for this client's relay serving `cid` to plain HTTP clients, up to `cap`: opens a
    /// channel from this identity's deposit to the relay, locking `cap`, and gives the relay an
    /// allowance on it for this content. Closing that channel (`Wallet::close_channel`) stops it.
    pub async fn allow_egress(&self, cid: &Cid, cap: Amount) -> Result<ChannelId, ClientError> {
        let wallet = crate::wallet::Wallet::open(self.conn(), self.identity().clone()).await?;
        let relay = AccountId::from_wire(*self.relay().id.as_bytes());
        let (channel, chain) = wallet.open_channel(relay, cap).await?;
        let allowance = AllowanceBody {
            chain,
            channel,
            content: cid.0,
            cap,
        }
        .sign(self.identity());
        let encoded =
            postcard::to_allocvec(&allowance).map_err(crate::error::LedgerError::Encode)?;
        let reply = self
            .cdn_request(CdnRequest::Allow {
                cid: *cid,
                allowance: encoded.into(),
            })
            .await?;
        match reply {
            CdnReply::Allowed => Ok(channel),
            CdnReply::Refused(why) => Err(FetchError::Refused(why).into()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request that has one reply.
    async fn cdn_request(&self, request: CdnRequest) -> Result<CdnReply, ClientError> {
        let (mut send, recv) = self.conn().open_bi().await?;
        send.write_all(&encode_frame(&Open::Cdn)?).await?;
        let mut out = FramedWrite::new(send, FrameCodec::<CdnRequest>::new(MAX_CDN_FRAME));
        out.send(request).await?;
        let mut frames = FramedRead::new(recv, FrameCodec::<CdnReply>::new(MAX_CDN_FRAME));
        next_reply(&mut frames).await
    }

    /// Stops publishing `cid` on this client's relay (only its publisher may).
    pub async fn unpublish(&self, cid: &Cid) -> Result<(), ClientError> {
        match self
            .cdn_request(CdnRequest::Unpublish { cid: *cid })
            .await?
        {
            CdnReply::Unpublished => Ok(()),
            CdnReply::Refused(why) => Err(FetchError::Refused(why).into()),
            other => Err(unexpected(other)),
        }
    }
}

async fn next_reply(
    frames: &mut FramedRead<quinn::RecvStream, FrameCodec<CdnReply>>,
) -> Result<CdnReply, ClientError> {
    match frames.next().await {
        Some(Ok(reply)) => Ok(reply),
        Some(Err(e)) => Err(e.into()),
        None => Err(
            FetchError::Refused(CdnRefusal::Failed("the relay closed the stream".into())).into(),
        ),
    }
}

fn unexpected(reply: CdnReply) -> ClientError {
    FetchError::Unexpected(format!("{reply:?}")).into()
}

/// How far a publish has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of the file hashed so far.
    Hashed(u64),
    /// Bytes sent of those the relay lacked.
    Sending {
        /// Sent so far.
        sent: u64,
        /// To send in all.
        total: u64,
    },
}
