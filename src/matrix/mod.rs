//! Us → homeserver: the client-server API calls the bridge makes, as the appservice.
//!
//! Requests and responses are ruma types; reqwest only carries bytes. Nothing outside
//! [`outbox`] sends messages: everything the bridge says is queued there first.

pub mod file;
pub mod html;
pub mod outbox;
pub mod poll;
pub mod render;

use std::{
    borrow::Cow,
    sync::{Arc, RwLock},
    time::Duration,
};

use ruma::{
    DeviceId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
    api::{
        AppserviceUserIdentity, IncomingResponse, OutgoingRequest, OutgoingRequestAppserviceExt,
        SupportedVersions,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::{
            account::{register, whoami},
            alias::get_alias,
            appservice::request_ping,
            device::update_device,
            discovery::get_supported_versions,
            filter::RoomEventFilter,
            media::create_content,
            membership::{
                get_member_events, join_room_by_id, join_room_by_id_or_alias, leave_room,
            },
            message::{get_message_events, send_message_event},
            profile::set_display_name,
            room::create_room,
            state::{get_state_event_for_key, get_state_events},
            uiaa::UiaaResponse,
        },
        error::{ErrorKind, FromHttpResponseError, LimitExceededErrorData, RetryAfter},
        path_builder::PathBuilder,
    },
    events::{AnyMessageLikeEventContent, StateEventType, room::member::MembershipState},
    serde::Raw,
};

use crate::secret::Secret;

/// A failed homeserver call. [`Error::is_transient`] drives every retry decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The homeserver could not be reached: the request did not get to it.
    #[error("cannot reach the homeserver: {0}")]
    Transport(String),
    /// The request went out but no answer came back (a timeout, a connection broken while
    /// waiting): the homeserver may have acted on it. The outbox checks before re-sending.
    #[error("no answer from the homeserver, which may have acted on the request: {0}")]
    InDoubt(String),
    /// The homeserver answered with an error.
    #[error("the homeserver answered {status} {errcode}: {message}")]
    Api {
        /// HTTP status.
        status: http::StatusCode,
        /// Matrix error code, e.g. `M_FORBIDDEN`.
        errcode: String,
        /// The homeserver's message.
        message: String,
        /// How long the homeserver asked us to wait (429).
        retry_after: Option<Duration>,
    },
    /// A 2xx response that is not what the spec says.
    #[error("unexpected response from the homeserver: {0}")]
    Response(String),
    /// The request could not be built (a bug, or an id the homeserver API cannot carry).
    #[error("cannot build the request: {0}")]
    Request(String),
    /// A message for an encrypted room could not be encrypted (never sent in the clear).
    #[error("cannot encrypt the message: {0}")]
    Encryption(String),
}

impl Error {
    /// Worth retrying: transport failures, rate limits and server-side errors.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) | Error::InDoubt(_) => true,
            Error::Api { status, .. } => {
                *status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            Error::Response(_) | Error::Request(_) | Error::Encryption(_) => false,
        }
    }

    /// Whether the homeserver may have acted on the request although it failed: no answer
    /// came back ([`Error::InDoubt`]), or a gateway in front of it answered that the
    /// homeserver did not answer in time (502, 504). A clear refusal (429, 4xx, 500, 503) or a
    /// connection that was never made is not in doubt.
    pub fn may_have_arrived(&self) -> bool {
        match self {
            Error::InDoubt(_) => true,
            Error::Api { status, .. } => matches!(
                *status,
                http::StatusCode::BAD_GATEWAY | http::StatusCode::GATEWAY_TIMEOUT
            ),
            _ => false,
        }
    }

    /// The wait the homeserver asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The Matrix error code, if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Error::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

/// Client for the homeserver, authenticated with the `as_token`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MatrixClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    as_token: Secret,
    bot: OwnedUserId,
    /// What `/versions` said; picks the path of each endpoint (v3 vs r0, stable vs unstable).
    versions: RwLock<Arc<SupportedVersions>>,
}

impl MatrixClient {
    /// A client for the homeserver at `base`, acting as `bot` with `as_token`.
    pub fn new(
        base: &url::Url,
        as_token: Secret,
        bot: OwnedUserId,
        timeout: Duration,
    ) -> Result<Self, Error> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("st2-matrix/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Request(e.to_string()))?;
        // Until /versions answers, assume a server of the v1.1 era: every endpoint we use has
        // its v3 path there.
        let assumed = SupportedVersions::from_parts(&["v1.1".to_owned()], &Default::default());
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: base.as_str().trim_end_matches('/').to_owned(),
                as_token,
                bot,
                versions: RwLock::new(Arc::new(assumed)),
            }),
        })
    }

    /// The bot's user id.
    pub fn bot(&self) -> &UserId {
        &self.inner.bot
    }

    /// `GET /_matrix/client/versions`: checks the homeserver answers and records which spec
    /// versions it speaks. Returns the versions it advertised.
    pub async fn versions(&self) -> Result<Vec<String>, Error> {
        let request = get_supported_versions::Request::new();
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&self.inner.base, SendAccessToken::None, ())
            .map_err(|e| Error::Request(e.to_string()))?;
        let response: get_supported_versions::Response = self.execute(http_request).await?;
        let supported =
            SupportedVersions::from_parts(&response.versions, &response.unstable_features);
        *self
            .inner
            .versions
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(supported);
        Ok(response.versions)
    }

    /// `GET /account/whoami` with the as_token: who the homeserver thinks we are.
    pub async fn whoami(&self) -> Result<OwnedUserId, Error> {
        Ok(self.send(whoami::v3::Request::new(), None).await?.user_id)
    }

    /// Registers the bot user (`m.login.application_service`, `inhibit_login`). Already
    /// registered is success.
    pub async fn register_bot(&self) -> Result<(), Error> {
        let mut request = register::v3::Request::new();
        request.username = Some(self.inner.bot.localpart().to_owned());
        request.login_type = Some(register::LoginType::ApplicationService);
        request.inhibit_login = true;
        match self.send_uiaa(request).await {
            Ok(_) => Ok(()),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets the bot's display name.
    pub async fn set_displayname(&self, name: &str) -> Result<(), Error> {
        #[allow(deprecated)]
        // set_profile_field's unstable path is picked on some servers; this one is stable
        let request =
            set_display_name::v3::Request::new(self.inner.bot.clone(), Some(name.to_owned()));
        self.send(request, None).await.map(drop)
    }

    /// `POST /_matrix/client/v1/appservice/{id}/ping`: asks the homeserver to call us back,
    /// which also makes Synapse retry queued transactions at once. Returns the round trip.
    pub async fn ping(&self, appservice_id: &str) -> Result<Duration, Error> {
        let mut request = request_ping::v1::Request::new(appservice_id.to_owned());
        request.transaction_id =
            Some(format!("st2m-ping-{}", crate::matrix::outbox::new_txn_id()).into());
        Ok(self.send(request, None).await?.duration)
    }

    /// Joins `room` as the bot.
    pub async fn join(&self, room: &RoomId) -> Result<(), Error> {
        self.send(join_room_by_id::v3::Request::new(room.to_owned()), None)
            .await
            .map(drop)
    }

    /// Leaves (or declines an invite to) `room`, with a reason shown to its members.
    pub async fn leave(&self, room: &RoomId, reason: &str) -> Result<(), Error> {
        let mut request = leave_room::v3::Request::new(room.to_owned());
        request.reason = Some(reason.to_owned());
        self.send(request, None).await.map(drop)
    }

    /// Opens a direct chat with `user` (private, `is_direct`, the person invited, end-to-end
    /// encrypted when `encrypted`) and returns it.
    pub async fn create_direct_chat(
        &self,
        user: &UserId,
        encrypted: bool,
    ) -> Result<OwnedRoomId, Error> {
        let mut request = create_room::v3::Request::new();
        request.invite = vec![user.to_owned()];
        request.is_direct = true;
        request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        if encrypted {
            request.initial_state = vec![encryption_state()];
        }
        Ok(self.send(request, None).await?.room_id)
    }

    /// The room an alias points to.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId, Error> {
        Ok(self
            .send(get_alias::v3::Request::new(alias.to_owned()), None)
            .await?
            .room_id)
    }

    /// Every state event of `room`, e.g. to read power levels and creators.
    pub async fn room_state(
        &self,
        room: &RoomId,
    ) -> Result<Vec<Raw<ruma::events::AnyStateEvent>>, Error> {
        let response = self
            .send(get_state_events::v3::Request::new(room.to_owned()), None)
            .await?;
        Ok(response.room_state)
    }

    /// Creates a private room, invites `users`, and names it; end-to-end encrypted when
    /// `encrypted`.
    pub async fn create_private_room(
        &self,
        name: &str,
        users: &[OwnedUserId],
        encrypted: bool,
    ) -> Result<OwnedRoomId, Error> {
        let mut request = create_room::v3::Request::new();
        request.invite = users.to_vec();
        request.name = Some(name.to_owned());
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        if encrypted {
            request.initial_state = vec![encryption_state()];
        }
        Ok(self.send(request, None).await?.room_id)
    }

    /// Joins a room by id or alias; returns its id.
    pub async fn join_by_id_or_alias(
        &self,
        room: &ruma::RoomOrAliasId,
    ) -> Result<OwnedRoomId, Error> {
        Ok(self
            .send(
                join_room_by_id_or_alias::v3::Request::new(room.to_owned()),
                None,
            )
            .await?
            .room_id)
    }

    /// Whether `room` has an `m.room.encryption` state event.
    pub async fn room_is_encrypted(&self, room: &RoomId) -> Result<bool, Error> {
        Ok(self
            .state_content(room, StateEventType::RoomEncryption)
            .await?
            .is_some())
    }

    /// Sends one message event with a caller-chosen transaction id. Only the outbox calls this.
    pub(crate) async fn send_message(
        &self,
        room: OwnedRoomId,
        event_type: &str,
        txn_id: &str,
        content: Raw<AnyMessageLikeEventContent>,
    ) -> Result<OwnedEventId, Error> {
        let request = send_message_event::v3::Request::new_raw(
            room,
            txn_id.into(),
            event_type.into(),
            content,
        );
        Ok(self.send(request, None).await?.event_id)
    }

    /// One page of the bot's own events in `room`, newest first (`GET /rooms/{room}/messages`
    /// backwards, filtered to the bot as sender), from the pagination token `from` or from the
    /// room's end; with the token of the next (older) page, if there is one. Only the outbox
    /// calls this, to find out whether a send whose answer was lost arrived.
    pub(crate) async fn own_recent_events(
        &self,
        room: &RoomId,
        from: Option<String>,
        limit: u32,
    ) -> Result<(Vec<OwnEvent>, Option<String>), Error> {
        let mut request = get_message_events::v3::Request::backward(room.to_owned());
        request.from = from;
        request.limit = limit.into();
        let mut filter = RoomEventFilter::default();
        filter.senders = Some(vec![self.inner.bot.clone()]);
        request.filter = filter;
        let response = self.send(request, None).await?;
        let events = response
            .chunk
            .iter()
            .filter_map(|raw| raw.deserialize_as_unchecked::<OwnEvent>().ok())
            .collect();
        // No further page when the answer was empty, whatever the token says.
        let next = response.end.filter(|_| !response.chunk.is_empty());
        Ok((events, next))
    }

    /// Uploads `data` to the media repository as the bot (`POST /_matrix/media/v3/upload`) and
    /// returns its `mxc://` URI. Only the outbox calls this, when it sends the message that
    /// carries the file.
    pub(crate) async fn upload(
        &self,
        data: Vec<u8>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri, Error> {
        let mut request = create_content::v3::Request::new(data);
        request.content_type = Some(content_type.to_owned());
        request.filename = filename.map(str::to_owned);
        Ok(self.send(request, None).await?.content_uri)
    }

    /// Sends `request` as the bot's own `device` (the homeserver's device masquerading with the
    /// as_token: `?user_id=<bot>&device_id=<device>`). The end-to-end encryption requests
    /// (keys, to-device messages, cross-signing) must come from the device they are about.
    pub(crate) async fn send_as_device<R>(
        &self,
        request: R,
        device: &DeviceId,
    ) -> Result<R::IncomingResponse, Error>
    where
        R: OutgoingRequest,
        R::EndpointError: ErrorDetails,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let mut identity = AppserviceUserIdentity::new(&self.inner.bot);
        identity.device_id = Some(device);
        let http_request = self.build_with(request, identity)?;
        self.execute(http_request).await
    }

    /// Creates the bot's `device` if it does not exist (MSC4190: `PUT /devices/{id}` as the
    /// appservice creates it) and sets its display name.
    pub async fn ensure_device(&self, device: &DeviceId, display_name: &str) -> Result<(), Error> {
        let mut request = update_device::v3::Request::new(device.to_owned());
        request.display_name = Some(display_name.to_owned());
        // As the bot without a device: masquerading as a device that does not exist yet is
        // refused (M_UNKNOWN_DEVICE).
        self.send(request, None).await.map(drop)
    }

    /// The users who are joined to or invited into `room`: whom its room keys are for.
    pub async fn room_members(&self, room: &RoomId) -> Result<Vec<OwnedUserId>, Error> {
        let response = self
            .send(get_member_events::v3::Request::new(room.to_owned()), None)
            .await?;
        Ok(response
            .chunk
            .iter()
            .filter_map(|raw| raw.deserialize().ok())
            .filter_map(|event| match event {
                ruma::events::room::member::RoomMemberEvent::Original(member)
                    if matches!(
                        member.content.membership,
                        MembershipState::Join | MembershipState::Invite
                    ) =>
                {
                    Some(member.state_key)
                }
                _ => None,
            })
            .collect())
    }

    /// The content of `room`'s state event of `event_type` (empty state key), if it has one.
    pub async fn state_content(
        &self,
        room: &RoomId,
        event_type: StateEventType,
    ) -> Result<Option<Box<serde_json::value::RawValue>>, Error> {
        let request =
            get_state_event_for_key::v3::Request::new(room.to_owned(), event_type, String::new());
        match self.send(request, None).await {
            Ok(response) => Ok(Some(response.event_or_content)),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends any client-server request that uses version-dependent paths, as the bot or (with
    /// `user`) as a user of the bridge's namespace.
    async fn send<R>(&self, request: R, user: Option<&UserId>) -> Result<R::IncomingResponse, Error>
    where
        R: OutgoingRequest<EndpointError = ruma::api::error::Error>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let http_request = self.build(request, user)?;
        self.execute(http_request).await
    }

    /// [`Self::send`] for endpoints whose errors may be user-interactive-auth responses.
    async fn send_uiaa<R>(&self, request: R) -> Result<R::IncomingResponse, Error>
    where
        R: OutgoingRequest<EndpointError = UiaaResponse>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let http_request = self.build(request, None)?;
        self.execute(http_request).await
    }

    fn build<R>(&self, request: R, user: Option<&UserId>) -> Result<http::Request<Vec<u8>>, Error>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let identity = user.map(AppserviceUserIdentity::new).unwrap_or_default();
        self.build_with(request, identity)
    }

    fn build_with<R>(
        &self,
        request: R,
        identity: AppserviceUserIdentity<'_>,
    ) -> Result<http::Request<Vec<u8>>, Error>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let versions = self
            .inner
            .versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        request
            .try_into_http_request_with_identity(
                &self.inner.base,
                SendAccessToken::Appservice(self.inner.as_token.expose()),
                identity,
                Cow::Borrowed(&versions),
            )
            .map_err(|e| Error::Request(e.to_string()))
    }

    async fn execute<T>(&self, request: http::Request<Vec<u8>>) -> Result<T, Error>
    where
        T: IncomingResponse,
        T::EndpointError: ErrorDetails,
    {
        let request =
            reqwest::Request::try_from(request).map_err(|e| Error::Request(e.to_string()))?;
        let response = self.inner.http.execute(request).await.map_err(|e| {
            // Only a connection that was never made is certain not to have delivered the
            // request; anything later (a timeout, a reset) may have.
            if e.is_connect() {
                Error::Transport(describe_transport(&e))
            } else {
                Error::InDoubt(describe_transport(&e))
            }
        })?;
        let status = response.status();
        let header_retry = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut builder = http::Response::builder().status(status);
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        // The answer was on its way: whatever it said, the request reached the homeserver.
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::InDoubt(describe_transport(&e)))?;
        let http_response = builder
            .body(body)
            .map_err(|e| Error::Response(e.to_string()))?;
        T::try_from_http_response(http_response).map_err(|e| match e {
            FromHttpResponseError::Server(server) => {
                let (errcode, message, body_retry) = server.details();
                Error::Api {
                    status,
                    errcode,
                    message,
                    retry_after: header_retry.or(body_retry),
                }
            }
            FromHttpResponseError::Deserialization(d) => Error::Response(d.to_string()),
            other => Error::Response(other.to_string()),
        })
    }
}

/// What the outbox needs of one of the bot's own events: its id, and the send transaction id it
/// was sent with, which the homeserver gives back (`unsigned.transaction_id`) to the sender
/// that used it.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct OwnEvent {
    /// The event's id.
    pub event_id: OwnedEventId,
    #[serde(default)]
    unsigned: OwnUnsigned,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct OwnUnsigned {
    #[serde(default)]
    transaction_id: Option<String>,
}

impl OwnEvent {
    /// The send transaction id, when the homeserver gave it back.
    pub fn transaction_id(&self) -> Option<&str> {
        self.unsigned.transaction_id.as_deref()
    }
}

/// The `m.room.encryption` state a room is created with: Megolm, the recommended rotation.
fn encryption_state() -> Raw<ruma::events::AnyInitialStateEvent> {
    ruma::events::InitialStateEvent::with_empty_state_key(
        ruma::events::room::encryption::RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()
}

/// Error code, message and retry hint of a homeserver error body.
pub(crate) trait ErrorDetails {
    fn details(&self) -> (String, String, Option<Duration>);
}

impl ErrorDetails for ruma::api::error::Error {
    fn details(&self) -> (String, String, Option<Duration>) {
        use ruma::api::error::{ErrorBody, StandardErrorBody};
        match &self.body {
            ErrorBody::Standard(StandardErrorBody { kind, message, .. }) => {
                let retry = match kind {
                    ErrorKind::LimitExceeded(LimitExceededErrorData {
                        retry_after: Some(RetryAfter::Delay(d)),
                        ..
                    }) => Some(*d),
                    _ => None,
                };
                (kind.errcode().to_string(), message.clone(), retry)
            }
            ErrorBody::Json(json) => ("M_UNKNOWN".into(), json.to_string(), None),
            ErrorBody::NotJson { bytes, .. } => (
                "M_UNKNOWN".into(),
                String::from_utf8_lossy(bytes).into_owned(),
                None,
            ),
        }
    }
}

impl ErrorDetails for UiaaResponse {
    fn details(&self) -> (String, String, Option<Duration>) {
        match self {
            UiaaResponse::MatrixError(e) => e.details(),
            UiaaResponse::AuthResponse(_) => (
                "M_FORBIDDEN".into(),
                "user-interactive authentication required".into(),
                None,
            ),
        }
    }
}

/// reqwest's error text with its cause chain (its Display hides "connection refused").
fn describe_transport(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
