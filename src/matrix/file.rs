//! Files the bridge posts (`m.file`): a long result, an execution's output.
//!
//! A [`FileMessage`] is the message plus the file's bytes. It is queued in the outbox like any
//! message ([`super::outbox::Outbox::queue_file_in`]); the bytes are uploaded by the outbox's
//! sender just before it sends the message, so an upload is retried like a send and nothing is
//! uploaded for a message that is never sent. In an encrypted room the bytes are encrypted
//! first (AES-256-CTR with a fresh key, matrix-sdk-crypto's `AttachmentEncryptor`, as Element
//! does) and the message carries the key in `file` instead of a `url`; the message itself is
//! then encrypted like any other, so only the room's members can read the key.

use std::io::Read as _;

use matrix_sdk_crypto::AttachmentEncryptor;
use ruma::{
    OwnedMxcUri, UInt,
    events::{
        Mentions,
        room::{
            EncryptedFile, MediaSource,
            message::{FileInfo, FileMessageEventContent, MessageType, RoomMessageEventContent},
        },
    },
    mxc_uri,
};
use serde_json::Value;

/// The media type of text files: UTF-8 spelled out, so browsers and Element's preview do not
/// guess another charset.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A file message before its upload: the `m.file` content (thread, reply and mentions may be
/// set on it like on any message) and the bytes it carries.
#[derive(Debug, Clone)]
pub struct FileMessage {
    /// The `m.file` message. Its `url` is a placeholder, replaced at send time.
    pub content: RoomMessageEventContent,
    /// The file.
    pub data: Vec<u8>,
    /// Its media type, e.g. [`TEXT_PLAIN`].
    pub mimetype: String,
}

impl FileMessage {
    /// A text file named `filename` holding `text`, shown as `filename` in the room, notifying
    /// nobody (the message it goes with does that).
    pub fn text(filename: &str, text: impl Into<Vec<u8>>) -> Self {
        let data = text.into();
        let mut file =
            FileMessageEventContent::new(filename.to_owned(), MediaSource::Plain(placeholder()));
        file.filename = Some(filename.to_owned());
        let mut info = FileInfo::new();
        info.mimetype = Some(TEXT_PLAIN.to_owned());
        info.size = UInt::new(data.len() as u64);
        file.info = Some(Box::new(info));
        let mut content = RoomMessageEventContent::new(MessageType::File(file));
        content.mentions = Some(Mentions::new());
        Self {
            content,
            data,
            mimetype: TEXT_PLAIN.to_owned(),
        }
    }

    /// The file's name, as shown in the room.
    pub fn filename(&self) -> Option<&str> {
        match &self.content.msgtype {
            MessageType::File(file) => Some(file.filename.as_deref().unwrap_or(&file.body)),
            _ => None,
        }
    }
}

/// Stands in for the file's URI until it is uploaded; never sent (the outbox removes it when
/// it queues the message).
fn placeholder() -> OwnedMxcUri {
    mxc_uri!("mxc://st2-matrix.invalid/pending").to_owned()
}

/// The queued content of a file message: `content` without its placeholder source.
pub(crate) fn queued_content(
    content: &RoomMessageEventContent,
) -> Result<String, serde_json::Error> {
    let mut json = serde_json::to_value(content)?;
    if let Some(object) = json.as_object_mut() {
        object.remove("url");
        object.remove("file");
    }
    serde_json::to_string(&json)
}

/// `data` encrypted for an encrypted room, and the `file` object that lets members decrypt it
/// once it is uploaded to `url`.
pub(crate) struct Encrypted {
    /// The ciphertext, to upload.
    pub data: Vec<u8>,
    info: matrix_sdk_crypto::MediaEncryptionInfo,
}

impl Encrypted {
    /// Encrypts `data` with a fresh key.
    pub fn new(data: &[u8]) -> Self {
        let mut reader = data;
        let mut encryptor = AttachmentEncryptor::new(&mut reader);
        let mut ciphertext = Vec::with_capacity(data.len());
        encryptor
            .read_to_end(&mut ciphertext)
            .expect("reading from a slice cannot fail");
        Self {
            data: ciphertext,
            info: encryptor.finish(),
        }
    }

    /// The `EncryptedFile` for the message, now that the ciphertext is at `url`.
    pub fn file(self, url: OwnedMxcUri) -> EncryptedFile {
        EncryptedFile::new(url, self.info.encryption_info, self.info.hashes)
    }
}

/// Puts the uploaded file into the queued `content` (JSON): `url` for a plain upload, `file`
/// (with the key) for an encrypted one.
pub(crate) fn with_source(content: &str, source: &MediaSource) -> Result<String, String> {
    let mut json: Value =
        serde_json::from_str(content).map_err(|e| format!("invalid content: {e}"))?;
    let object = json
        .as_object_mut()
        .ok_or_else(|| "invalid content: not an object".to_owned())?;
    object.remove("url");
    object.remove("file");
    let (key, value) = match source {
        MediaSource::Plain(url) => ("url", serde_json::to_value(url)),
        MediaSource::Encrypted(file) => ("file", serde_json::to_value(file)),
    };
    object.insert(
        key.to_owned(),
        value.map_err(|e| format!("invalid file: {e}"))?,
    );
    Ok(json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrix_sdk_crypto::AttachmentDecryptor;
    use serde_json::json;

    #[test]
    fn a_text_file_message_names_its_file_and_its_size_and_notifies_nobody() {
        let file = FileMessage::text("execution-abc.txt", "hello\n");
        assert_eq!(file.filename(), Some("execution-abc.txt"));
        let queued: Value = serde_json::from_str(&queued_content(&file.content).unwrap()).unwrap();
        assert_eq!(
            queued,
            json!({
                "msgtype": "m.file",
                "body": "execution-abc.txt",
                "filename": "execution-abc.txt",
                "info": {"mimetype": "text/plain; charset=utf-8", "size": 6},
                "m.mentions": {},
            })
        );
    }

    #[test]
    fn a_plain_upload_becomes_the_url() {
        let file = FileMessage::text("f.txt", "x");
        let queued = queued_content(&file.content).unwrap();
        let url = mxc_uri!("mxc://example.org/abc").to_owned();
        let sent: Value =
            serde_json::from_str(&with_source(&queued, &MediaSource::Plain(url)).unwrap()).unwrap();
        assert_eq!(sent["url"], "mxc://example.org/abc");
        assert!(sent.get("file").is_none());
        assert_eq!(sent["msgtype"], "m.file");
    }

    #[test]
    fn an_encrypted_upload_carries_the_key_and_decrypts_to_the_text() {
        let text = "line one\nline two\n".repeat(500);
        let encrypted = Encrypted::new(text.as_bytes());
        assert_ne!(encrypted.data, text.as_bytes());
        let ciphertext = encrypted.data.clone();
        let url = mxc_uri!("mxc://example.org/enc").to_owned();
        let file = encrypted.file(url);
        let queued = queued_content(&FileMessage::text("f.txt", text.clone()).content).unwrap();
        let sent: Value = serde_json::from_str(
            &with_source(&queued, &MediaSource::Encrypted(Box::new(file.clone()))).unwrap(),
        )
        .unwrap();
        assert!(sent.get("url").is_none(), "{sent}");
        assert_eq!(sent["file"]["url"], "mxc://example.org/enc");
        assert_eq!(sent["file"]["v"], "v2");
        assert_eq!(sent["file"]["key"]["alg"], "A256CTR");
        assert!(sent["file"]["hashes"]["sha256"].is_string());

        let mut reader = ciphertext.as_slice();
        let mut decryptor = AttachmentDecryptor::new(&mut reader, file.into()).unwrap();
        let mut plain = Vec::new();
        decryptor.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, text.as_bytes());
    }
}
