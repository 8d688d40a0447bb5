//! The wallet: ledger queries and signed transactions through the client's relay.

use std::time::{SystemTime, UNIX_EPOCH};

use ledger_lite::wire::{AccountView, LedgerRequest, LedgerResponse, MAX_LEDGER_FRAME, Summary};
use ledger_lite::{Amount, ChannelId, Grant, Tx, TxHash, TxKind};
use top_proto::addr::RelayAddr;
use top_proto::frame::Open;
use top_proto::id::AccountId;
use top_proto::identity::Identity;
use top_proto::net::rpc::RpcStream;

use crate::error::{ClientError, LedgerError};

/// A transaction that landed in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its hash.
    pub hash: TxHash,
    /// The block it is in.
    pub height: u64,
}

/// Ledger access for one identity over its relay connection.
pub struct Wallet {
    identity: Identity,
    rpc: tokio::sync::Mutex<RpcStream<LedgerRequest, LedgerResponse>>,
    /// Set when the wallet owns its connection (see [`Wallet::connect`]).
    own: Option<(quinn::Endpoint, quinn::Connection)>,
}

impl Wallet {
    /// Connects to `relay` for ledger access only (no messaging session, nothing billed).
    pub async fn connect(relay: &RelayAddr, identity: Identity) -> Result<Self, ClientError> {
        let endpoint = top_proto::net::endpoint::client_endpoint(&relay.host_port)?;
        let conn = top_proto::net::dial::dial(&endpoint, &identity, relay).await?;
        let mut wallet = Self::open(&conn, identity).await?;
        wallet.own = Some((endpoint, conn));
        Ok(wallet)
    }

    /// Closes the wallet's own connection, if it has one.
    pub async fn close(self) {
        if let Some((endpoint, conn)) = self.own {
            conn.close(0u32.into(), b"bye");
            endpoint.wait_idle().await;
        }
    }

    /// Opens a ledger stream on `conn`.
    pub async fn open(conn: &quinn::Connection, identity: Identity) -> Result<Self, ClientError> {
        let rpc = RpcStream::open(conn, Open::Ledger, MAX_LEDGER_FRAME).await?;
        Ok(Self {
            identity,
            rpc: tokio::sync::Mutex::new(rpc),
            own: None,
        })
    }

    async fn call(&self, req: LedgerRequest) -> Result<LedgerResponse, ClientError> {
        match self.rpc.lock().await.call(req).await? {
            LedgerResponse::Error(e) => Err(LedgerError::Refused(e).into()),
            other => Ok(other),
        }
    }

    /// The chain at a glance.
    pub async fn summary(&self) -> Result<Summary, ClientError> {
        match self.call(LedgerRequest::Summary).await? {
            LedgerResponse::Summary(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// An account (this wallet's own with `None`).
    pub async fn account(&self, id: Option<AccountId>) -> Result<AccountView, ClientError> {
        let id = id.unwrap_or_else(|| self.identity.account_id());
        match self.call(LedgerRequest::Account(id)).await? {
            LedgerResponse::Account(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// A channel's state on the chain (`None`: no such channel).
    pub async fn channel(
        &self,
        id: ledger_lite::ChannelId,
    ) -> Result<Option<ledger_lite::Channel>, ClientError> {
        match self.call(LedgerRequest::Channel(id)).await? {
            LedgerResponse::Channel(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Every registered relay (the chain's registry), page by page.
    pub async fn relays(&self) -> Result<Vec<ledger_lite::wire::RelayEntry>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = match self.call(LedgerRequest::Relays { after }).await? {
                LedgerResponse::Relays(page) => page,
                other => return Err(unexpected(other)),
            };
            let last_page = page.len() < ledger_lite::wire::MAX_RELAYS_PER_PAGE;
            after = page.last().map(|r| r.id);
            // A relay's answer is its word: records that break the chain's rules are dropped.
            all.extend(page.into_iter().filter(|r| r.record.check().is_ok()));
            // A relay that answers the same page forever is not followed past 100,000.
            if last_page || after.is_none() || all.len() >= 100_000 {
                return Ok(all);
            }
        }
    }

    /// The grant `app` gave `user`.
    pub async fn grant_of(
        &self,
        app: AccountId,
        user: AccountId,
    ) -> Result<Option<Grant>, ClientError> {
        match self.call(LedgerRequest::Grant(app, user)).await? {
            LedgerResponse::Grant(g) => Ok(g),
            other => Err(unexpected(other)),
        }
    }

    /// Signs `kind` with this wallet's next nonce and waits until it is in a block.
    pub async fn submit(&self, kind: TxKind) -> Result<Committed, ClientError> {
        let (tx, _) = self.sign(kind).await?;
        match self.call(LedgerRequest::Submit { tx, wait: true }).await? {
            LedgerResponse::Submitted {
                hash,
                height: Some(height),
            } => Ok(Committed { hash, height }),
            other => Err(unexpected(other)),
        }
    }

    /// Signs `kind` with this wallet's next nonce, without submitting it.
    pub async fn sign(&self, kind: TxKind) -> Result<(ledger_lite::SignedTx, u64), ClientError> {
        let me = self.identity.account_id();
        let nonce = self.account(Some(me)).await?.next_nonce;
        let summary = self.summary().await?;
        let tx = Tx {
            chain: summary.chain,
            from: me,
            nonce,
            fee: summary.min_fee,
            kind,
        }
        .sign(&self.identity);
        Ok((tx, nonce))
    }

    /// Dev chains: asks the faucet for `amount`.
    pub async fn faucet(&self, amount: Amount) -> Result<Committed, ClientError> {
        let to = self.identity.account_id();
        match self.call(LedgerRequest::Faucet { to, amount }).await? {
            LedgerResponse::Submitted {
                hash,
                height: Some(height),
            } => Ok(Committed { hash, height }),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `amount` to `to`.
    pub async fn transfer(&self, to: AccountId, amount: Amount) -> Result<Committed, ClientError> {
        self.submit(TxKind::Transfer { to, amount }).await
    }

    /// Locks `amount` of the balance as a resource deposit.
    pub async fn deposit(&self, amount: Amount) -> Result<Committed, ClientError> {
        self.submit(TxKind::Deposit { amount }).await
    }

    /// Starts returning `amount` of free deposit to the balance (after unbonding).
    pub async fn withdraw(&self, amount: Amount) -> Result<Committed, ClientError> {
        self.submit(TxKind::Withdraw { amount }).await
    }

    /// Lets `user` open channels paid from this wallet's deposit, up to `cap`, for `ttl`.
    pub async fn grant(
        &self,
        user: AccountId,
        cap: Amount,
        ttl: std::time::Duration,
    ) -> Result<Committed, ClientError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let expires_ms = now.saturating_add(ttl.as_millis() as u64);
        self.submit(TxKind::Grant {
            user,
            cap,
            expires_ms,
        })
        .await
    }

    /// Opens a channel locking `amount` of this wallet's deposit for `relay`; returns its id
    /// and the chain's id once it is in a block.
    pub async fn open_channel(
        &self,
        relay: AccountId,
        amount: Amount,
    ) -> Result<(ChannelId, ledger_lite::ChainId), ClientError> {
        let kind = TxKind::OpenChannel {
            relay,
            amount,
            sponsor: None,
        };
        let (tx, nonce) = self.sign(kind).await?;
        let chain = tx.tx.chain;
        match self.call(LedgerRequest::Submit { tx, wait: true }).await? {
            LedgerResponse::Submitted {
                height: Some(_), ..
            } => {}
            LedgerResponse::Error(why) => return Err(LedgerError::Refused(why).into()),
            other => return Err(unexpected(other)),
        }
        let me = self.identity.account_id();
        Ok((ChannelId::derive(&chain, &me, &relay, nonce), chain))
    }

    /// Starts closing a channel (the relay can still settle during unbonding).
    pub async fn close_channel(&self, channel: ChannelId) -> Result<Committed, ClientError> {
        self.submit(TxKind::CloseChannel { channel }).await
    }
}

fn unexpected(resp: LedgerResponse) -> ClientError {
    LedgerError::Unexpected(format!("{resp:?}")).into()
}
