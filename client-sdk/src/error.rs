//! Errors of the client SDK.

use top_proto::frame::Reject;
use top_proto::id::AccountId;

/// What went wrong in a client operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The relay could not be reached or is not who it claims to be.
    #[error(transparent)]
    Dial(#[from] top_proto::net::dial::DialError),
    /// The connection to the relay failed or closed.
    #[error("connection to relay lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The client (or its session) is closed.
    #[error("client is closed")]
    Closed,
    /// The relay refused the message.
    #[error("message refused: {0}")]
    Rejected(Reject),
    /// The message could not be sealed.
    #[error(transparent)]
    Seal(#[from] top_proto::seal::SealError),
    /// The pipe's end-to-end encryption failed.
    #[error(transparent)]
    PipeCrypto(#[from] top_proto::pipe_crypto::PipeCryptoError),
    /// The peer is not connected to any reachable relay.
    #[error("peer {0} is not connected to any reachable relay")]
    Unreachable(AccountId),
    /// The relay sent something malformed.
    #[error("protocol error: {0}")]
    Frame(#[from] top_proto::frame::FrameError),
    /// Writing to a stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Local TLS setup failed.
    #[error(transparent)]
    Tls(#[from] top_proto::tls::TlsError),
    /// A request on a ledger or billing stream failed.
    #[error(transparent)]
    Rpc(#[from] top_proto::net::rpc::RpcError),
    /// The ledger refused or could not answer.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The relay requires payment and no channel could be set up.
    #[error("billing: {0}")]
    Billing(#[from] BillingError),
    /// The tunnel could not be set up or was refused.
    #[error("vpn: {0}")]
    Vpn(#[from] VpnError),
    /// The exit refused a proxied connection.
    #[error("the exit refused the connection: {0:?}")]
    Proxy(top_proto::vpn::ConnectReply),
    /// A CDN request failed, was refused, or the relay served bad data.
    #[error(transparent)]
    Cdn(#[from] top_proto::net::cdn_fetch::FetchError),
    /// A realtime pipe could not be opened or used.
    #[error("realtime pipe: {0}")]
    Realtime(#[from] RealtimeError),
}

/// Why a realtime pipe could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RealtimeError {
    /// A relay on the path or the peer refused the pipe.
    #[error("refused: {0}")]
    Refused(String),
    /// The payload does not fit one datagram on the path.
    #[error("payload of {len} bytes is larger than the path carries ({max})")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload the path carries.
        max: usize,
    },
    /// The peers' handshake failed (wrong key, forged identity).
    #[error(transparent)]
    Crypto(#[from] top_proto::vpn::cipher::VpnCryptoError),
    /// The connection carries no datagrams.
    #[error("the connection does not carry datagrams")]
    NoDatagrams,
}

/// Why paying a relay could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// The relay charges and refused the channel offered.
    #[error(
        "relay {relay} charges (messages {msg_price} TOP/MiB, VPN {vpn_price} TOP/MiB) and \
         refused the channel: {why} (deposit first: `top wallet deposit AMOUNT`)"
    )]
    Refused {
        /// The relay (short id).
        relay: String,
        /// Its price for messages.
        msg_price: ledger_lite::Amount,
        /// Its price for VPN traffic.
        vpn_price: ledger_lite::Amount,
        /// Its words.
        why: String,
    },
    /// The relay answered out of protocol.
    #[error("unexpected answer from the relay: {0}")]
    Unexpected(String),
    /// The relay claims more was paid on the channel than this client signed.
    #[error(
        "relay {relay} claims {claimed} TOP was paid on the channel; this client signed {signed}"
    )]
    Unpaid {
        /// The relay (short id).
        relay: String,
        /// What it claims.
        claimed: ledger_lite::Amount,
        /// What this client signed.
        signed: ledger_lite::Amount,
    },
}

/// Why a ledger request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The ledger refused the request; its words.
    #[error("{0}")]
    Refused(String),
    /// The relay answered with something other than what the request asks for.
    #[error("unexpected answer from the relay: {0}")]
    Unexpected(String),
    /// A signed body could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(#[from] postcard::Error),
}

/// Why a tunnel or a proxied connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpnError {
    /// The exit's id is not a valid key.
    #[error("the exit's id is not a valid key")]
    BadExitId,
    /// The exit refused the tunnel; its words.
    #[error("the exit refused the tunnel: {0}")]
    Refused(String),
    /// The exit answered out of protocol.
    #[error("unexpected answer from the exit: {0}")]
    Unexpected(String),
    /// The exit closed the tunnel during setup.
    #[error("the exit closed the tunnel")]
    ExitClosed,
    /// The connection to the relay carries no datagrams.
    #[error("the relay does not accept datagrams")]
    NoDatagrams,
    /// The tunnel's key exchange failed.
    #[error(transparent)]
    Crypto(#[from] top_proto::vpn::cipher::VpnCryptoError),
    /// A request could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(#[from] postcard::Error),
    /// The exit's answer to a connect request did not decode.
    #[error("malformed connect reply")]
    MalformedReply,
    /// A SOCKS client did not finish its handshake in time.
    #[error("SOCKS handshake timed out")]
    SocksTimeout,
}
