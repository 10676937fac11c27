//! ZMTP 3 framing without I/O: the greeting, commands, and the bounded frame decoder.
//!
//! The decoder reads a frame's header (flags and size) and checks the declared size against
//! the limits *before* the body is waited for, so nothing a peer declares is ever reserved:
//! at most one message under the limit is buffered, whatever the header says (a 9-byte header
//! may declare 2^64 − 1 bytes). It yields whole messages (the frames up to one without the
//! MORE flag) and commands, and leaves everything else in the buffer until more bytes come.
//!
//! A message over the limit but within a second, larger bound is *discarded*: the decoder
//! reports it once ([`Decoded::Oversized`], with the frames received before it broke the
//! limit) and then drops its bytes as they come, never holding more than what one read
//! brought, so one oversized message from a legitimate publisher costs only itself. A message
//! declared beyond that bound ends the connection ([`FrameError::FrameTooLarge`]): nobody
//! waits for gigabytes that will be thrown away.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of a ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;

/// Longest command accepted (READY's metadata, PING's context): libzmq's are a few dozen bytes.
pub const MAX_COMMAND_BYTES: u64 = 64 * 1024;

/// Most frames in one message: fedmsg sends two; anything far beyond is not a publisher's.
pub const MAX_FRAMES: usize = 256;

/// Frame flags (ZMTP 3.0 §"Framing"): the other bits are reserved and ignored, as libzmq does.
const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// The `NULL` security mechanism, the only one fedmsg uses.
const MECHANISM_NULL: &[u8] = b"NULL";

/// Why the peer's bytes cannot be ZMTP we accept. Each ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a ZMTP greeting (first byte {first:#04x}, tenth {tenth:#04x})")]
    BadGreeting { first: u8, tenth: u8 },
    #[error("ZMTP {major}.{minor} is not supported (3.0 and later are)")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("security mechanism {0:?} is not supported (NULL is)")]
    UnsupportedMechanism(String),
    #[error("a frame of {declared} bytes was declared, over the {limit}-byte message limit ({buffered} bytes of the message already received)")]
    FrameTooLarge {
        declared: u64,
        limit: usize,
        buffered: usize,
    },
    #[error("a message of more than {MAX_FRAMES} frames")]
    TooManyFrames,
    #[error("a command of {declared} bytes was declared, over {MAX_COMMAND_BYTES}")]
    CommandTooLarge { declared: u64 },
    #[error("malformed command: {0}")]
    BadCommand(&'static str),
}

impl FrameError {
    /// A short stable name: a metric label and a dead letter's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::BadGreeting { .. } => "bad_greeting",
            FrameError::UnsupportedVersion { .. } => "unsupported_version",
            FrameError::UnsupportedMechanism(_) => "unsupported_mechanism",
            FrameError::FrameTooLarge { .. } => "frame_too_large",
            FrameError::TooManyFrames => "too_many_frames",
            FrameError::CommandTooLarge { .. } => "command_too_large",
            FrameError::BadCommand(_) => "bad_command",
        }
    }
}

/// What the peer's greeting says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    pub major: u8,
    pub minor: u8,
}

impl Greeting {
    /// ZMTP 3.1 added PING and PONG; a 3.0 peer would not understand them.
    pub fn supports_heartbeats(&self) -> bool {
        self.major > 3 || (self.major == 3 && self.minor >= 1)
    }
}

/// Parses the peer's 64-byte greeting.
pub fn parse_greeting(bytes: &[u8; GREETING_LEN]) -> Result<Greeting, FrameError> {
    // The signature: 0xFF, eight bytes of padding, then a byte whose low bit is set (0x7F);
    // ZMTP 1.0 peers put a length there instead.
    if bytes[0] != 0xff || bytes[9] & 0x01 == 0 {
        return Err(FrameError::BadGreeting {
            first: bytes[0],
            tenth: bytes[9],
        });
    }
    let greeting = Greeting {
        major: bytes[10],
        minor: bytes[11],
    };
    if greeting.major < 3 {
        return Err(FrameError::UnsupportedVersion {
            major: greeting.major,
            minor: greeting.minor,
        });
    }
    let mechanism = &bytes[12..32];
    let name_end = mechanism
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(mechanism.len());
    if &mechanism[..name_end] != MECHANISM_NULL {
        let shown = String::from_utf8_lossy(&mechanism[..name_end]).into_owned();
        return Err(FrameError::UnsupportedMechanism(shown));
    }
    Ok(greeting)
}

/// Appends a command frame (`name` then `data`) to `out`.
pub fn put_command(out: &mut BytesMut, name: &[u8], data: &[u8]) {
    debug_assert!(name.len() <= usize::from(u8::MAX));
    let body_len = 1 + name.len() + data.len();
    put_frame_header(out, FLAG_COMMAND, body_len);
    out.put_u8(name.len() as u8);
    out.put_slice(name);
    out.put_slice(data);
}

/// A PING without context; the TTL is 0 (we ask the peer for nothing beyond a PONG).
pub fn put_ping(out: &mut BytesMut) {
    put_command(out, b"PING", &[0, 0]);
}

/// Appends a message: its frames, each but the last with the MORE flag.
pub fn put_message(out: &mut BytesMut, frames: &[Bytes]) {
    let last = frames.len().saturating_sub(1);
    for (index, frame) in frames.iter().enumerate() {
        let flags = if index < last { FLAG_MORE } else { 0 };
        put_frame_header(out, flags, frame.len());
        out.put_slice(frame);
    }
}

fn put_frame_header(out: &mut BytesMut, flags: u8, len: usize) {
    match u8::try_from(len) {
        Ok(short) => {
            out.put_u8(flags);
            out.put_u8(short);
        }
        Err(_) => {
            out.put_u8(flags | FLAG_LONG);
            out.put_u64(len as u64);
        }
    }
}

/// A command, parsed: its name and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: Bytes,
    pub data: Bytes,
}

impl Command {
    fn parse(mut body: Bytes) -> Result<Command, FrameError> {
        if body.is_empty() {
            return Err(FrameError::BadCommand("empty command"));
        }
        let name_len = usize::from(body.get_u8());
        if body.len() < name_len {
            return Err(FrameError::BadCommand("name longer than the command"));
        }
        let name = body.split_to(name_len);
        Ok(Command { name, data: body })
    }

    /// The value of property `wanted` in READY's metadata.
    pub fn property(&self, wanted: &[u8]) -> Result<Option<Bytes>, FrameError> {
        let mut data = self.data.clone();
        while !data.is_empty() {
            let name_len = usize::from(data.get_u8());
            if data.len() < name_len + 4 {
                return Err(FrameError::BadCommand("truncated property"));
            }
            let name = data.split_to(name_len);
            let value_len = data.get_u32() as usize;
            if data.len() < value_len {
                return Err(FrameError::BadCommand("truncated property value"));
            }
            let value = data.split_to(value_len);
            if name.eq_ignore_ascii_case(wanted) {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// PING's context (at most 16 bytes are echoed, as ZMTP 3.1 asks).
    pub fn ping_context(&self) -> Result<Bytes, FrameError> {
        if self.data.len() < 2 {
            return Err(FrameError::BadCommand("PING without a TTL"));
        }
        let context = self.data.slice(2..);
        Ok(context.slice(..context.len().min(16)))
    }

    /// The PONG answering this PING.
    pub fn put_pong(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let context = self.ping_context()?;
        put_command(out, b"PONG", &context);
        Ok(())
    }
}

/// What the decoder took from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole message: its frames, in order.
    Message(Vec<Bytes>),
    Command(Command),
    /// A message over the limit, now being dropped: the frames received before the one that
    /// broke the limit, and what that one declared. Its remaining bytes are dropped as they
    /// come; the messages after it are decoded as usual.
    Oversized {
        frames: Vec<Bytes>,
        violation: FrameError,
    },
}

/// Frames after the greeting, bounded by the message limit before any body is buffered.
#[derive(Debug)]
pub struct Decoder {
    max_message_bytes: usize,
    /// Largest message (all frames, as declared) dropped rather than ending the connection.
    max_discard_bytes: u64,
    /// Frames of the message being received (those sent with MORE).
    frames: Vec<Bytes>,
    frame_bytes: usize,
    /// The oversized message being dropped, if any.
    discard: Option<Discard>,
}

/// Where the decoder is in an oversized message it drops.
#[derive(Debug, Clone, Copy)]
struct Discard {
    /// Bytes of the current frame's body still to drop.
    body_left: u64,
    /// Whether more frames of the message follow this one.
    more: bool,
    /// Bytes the message declared so far, all frames.
    declared: u64,
    frames: usize,
}

/// A frame header, read without consuming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub header_len: usize,
    pub body_len: u64,
}

impl Header {
    pub fn is_command(&self) -> bool {
        self.flags & FLAG_COMMAND != 0
    }

    pub fn has_more(&self) -> bool {
        self.flags & FLAG_MORE != 0
    }
}

/// The frame header at the front of `buffer`, or `None` if it is not all there yet.
pub fn peek_header(buffer: &[u8]) -> Option<Header> {
    let &flags = buffer.first()?;
    let (header_len, body_len) = if flags & FLAG_LONG != 0 {
        let size = buffer.get(1..9)?;
        let mut size_bytes = [0u8; 8];
        size_bytes.copy_from_slice(size);
        (9, u64::from_be_bytes(size_bytes))
    } else {
        (2, u64::from(*buffer.get(1)?))
    };
    Some(Header {
        flags,
        header_len,
        body_len,
    })
}

impl Decoder {
    /// A decoder yielding messages of at most `max_message_bytes` (all frames), dropping
    /// larger ones that declare at most `max_discard_bytes` in all, and refusing the others
    /// ([`FrameError::FrameTooLarge`]).
    pub fn new(max_message_bytes: usize, max_discard_bytes: u64) -> Decoder {
        Decoder {
            max_message_bytes,
            max_discard_bytes,
            frames: Vec::new(),
            frame_bytes: 0,
            discard: None,
        }
    }

    /// The frames of the message cut short so far (for a dead letter of what came).
    pub fn partial_message(&self) -> &[Bytes] {
        &self.frames
    }

    /// Whether an oversized message's bytes are being dropped.
    pub fn is_discarding(&self) -> bool {
        self.discard.is_some()
    }

    /// Takes the next message or command from the front of `buffer` (or reports a message
    /// over the limit that is being dropped), or `Ok(None)` when more bytes are needed:
    /// [`Decoder::wanted`] says how many at most.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        loop {
            if let Some(discard) = self.discard.as_mut() {
                // At most the buffer's length, so it fits in usize.
                let dropped = discard.body_left.min(buffer.len() as u64) as usize;
                buffer.advance(dropped);
                discard.body_left -= dropped as u64;
                if discard.body_left > 0 {
                    return Ok(None);
                }
                if !discard.more {
                    self.discard = None;
                }
            }
            let Some(header) = peek_header(buffer) else {
                return Ok(None);
            };
            if header.is_command() {
                if header.body_len > MAX_COMMAND_BYTES {
                    return Err(FrameError::CommandTooLarge {
                        declared: header.body_len,
                    });
                }
                // At most MAX_COMMAND_BYTES.
                let body_len = header.body_len as usize;
                if buffer.len() < header.header_len + body_len {
                    return Ok(None);
                }
                buffer.advance(header.header_len);
                let body = buffer.split_to(body_len).freeze();
                return Ok(Some(Decoded::Command(Command::parse(body)?)));
            }
            if let Some(discard) = self.discard.as_mut() {
                // The next frame of the message being dropped: its body goes too.
                discard.frames += 1;
                if discard.frames > MAX_FRAMES {
                    return Err(FrameError::TooManyFrames);
                }
                discard.declared = discard.declared.saturating_add(header.body_len);
                if discard.declared > self.max_discard_bytes {
                    return Err(FrameError::FrameTooLarge {
                        declared: header.body_len,
                        limit: self.max_message_bytes,
                        buffered: 0,
                    });
                }
                buffer.advance(header.header_len);
                discard.body_left = header.body_len;
                discard.more = header.has_more();
                continue;
            }
            if self.frames.len() >= MAX_FRAMES {
                return Err(FrameError::TooManyFrames);
            }
            let room = self.max_message_bytes.saturating_sub(self.frame_bytes);
            if header.body_len > room as u64 {
                return self.start_discard(buffer, header);
            }
            // Within the room, so it fits in usize.
            let body_len = header.body_len as usize;
            if buffer.len() < header.header_len + body_len {
                return Ok(None);
            }
            buffer.advance(header.header_len);
            let body = buffer.split_to(body_len).freeze();
            self.frame_bytes += body.len();
            self.frames.push(body);
            if !header.has_more() {
                self.frame_bytes = 0;
                return Ok(Some(Decoded::Message(std::mem::take(&mut self.frames))));
            }
        }
    }

    /// A frame over the room left in the message: the message is dropped from here if its
    /// declared size is within the discard bound, else refused.
    fn start_discard(
        &mut self,
        buffer: &mut BytesMut,
        header: Header,
    ) -> Result<Option<Decoded>, FrameError> {
        let violation = FrameError::FrameTooLarge {
            declared: header.body_len,
            limit: self.max_message_bytes,
            buffered: self.frame_bytes,
        };
        let declared = (self.frame_bytes as u64).saturating_add(header.body_len);
        if declared > self.max_discard_bytes {
            return Err(violation);
        }
        buffer.advance(header.header_len);
        self.discard = Some(Discard {
            body_left: header.body_len,
            more: header.has_more(),
            declared,
            frames: self.frames.len() + 1,
        });
        self.frame_bytes = 0;
        Ok(Some(Decoded::Oversized {
            frames: std::mem::take(&mut self.frames),
            violation,
        }))
    }

    /// How many more bytes the item at the front of `buffer` needs (at least 1: a header byte
    /// when nothing is known yet, or any byte of a body being dropped). Never more than a
    /// message under the limit or a command.
    pub fn wanted(&self, buffer: &BytesMut) -> usize {
        if self.discard.is_some() {
            return 1;
        }
        let Some(header) = peek_header(buffer) else {
            // An incomplete header: the long form is 9 bytes at most.
            return 9usize.saturating_sub(buffer.len()).max(1);
        };
        let room = if header.is_command() {
            MAX_COMMAND_BYTES
        } else {
            self.max_message_bytes.saturating_sub(self.frame_bytes) as u64
        };
        if header.body_len > room {
            // The next decode refuses it, or starts dropping it.
            return 1;
        }
        // Within the room, so it fits in usize.
        let total = header.header_len + header.body_len as usize;
        total.saturating_sub(buffer.len()).max(1)
    }
}

/// What a libzmq peer sends, for tests here and in the guard's.
#[cfg(test)]
pub mod peer {
    use super::*;

    /// libzmq's greeting: ZMTP 3.1, `NULL`, not as server.
    pub fn greeting() -> [u8; GREETING_LEN] {
        let mut bytes = [0u8; GREETING_LEN];
        bytes[0] = 0xff;
        bytes[9] = 0x7f;
        bytes[10] = 3;
        bytes[11] = 1;
        bytes[12..12 + MECHANISM_NULL.len()].copy_from_slice(MECHANISM_NULL);
        bytes
    }

    /// The READY command of a `socket_type` socket.
    pub fn put_ready(out: &mut BytesMut, socket_type: &[u8]) {
        let mut metadata = BytesMut::new();
        let name = b"Socket-Type";
        metadata.put_u8(name.len() as u8);
        metadata.put_slice(name);
        metadata.put_u32(socket_type.len() as u32);
        metadata.put_slice(socket_type);
        put_command(out, b"READY", &metadata);
    }
}

#[cfg(test)]
mod tests {
    use super::peer::{greeting, put_ready};
    use super::*;
    use proptest::prelude::*;

    fn message_bytes(frames: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        for (index, frame) in frames.iter().enumerate() {
            let more = index + 1 < frames.len();
            put_frame_header(&mut out, if more { FLAG_MORE } else { 0 }, frame.len());
            out.put_slice(frame);
        }
        out
    }

    #[test]
    fn a_libzmq_greeting_is_read_as_zmtp_3_1_null() {
        let greeting = parse_greeting(&greeting()).expect("valid");
        assert_eq!(greeting, Greeting { major: 3, minor: 1 });
        assert!(greeting.supports_heartbeats());
        assert!(!Greeting { major: 3, minor: 0 }.supports_heartbeats());
    }

    #[test]
    fn foreign_greetings_are_refused_with_a_reason() {
        let mut old = greeting();
        old[10] = 2;
        assert_eq!(
            parse_greeting(&old).map_err(|e| e.reason()),
            Err("unsupported_version")
        );
        let mut curve = greeting();
        curve[12..17].copy_from_slice(b"CURVE");
        assert_eq!(
            parse_greeting(&curve).map_err(|e| e.reason()),
            Err("unsupported_mechanism")
        );
        let http = *b"GET / HTTP/1.1\r\nHost: x\r\n\r\n.....................................";
        assert_eq!(
            parse_greeting(&http).map_err(|e| e.reason()),
            Err("bad_greeting")
        );
    }

    #[test]
    fn a_two_frame_message_and_commands_are_decoded() {
        let mut buffer = message_bytes(&[b"topic", &[b'x'; 300]]);
        put_ping_with(&mut buffer, b"ctx");
        let mut decoder = Decoder::new(1024, 1024);
        let Some(Decoded::Message(frames)) = decoder.decode(&mut buffer).expect("valid") else {
            panic!("a message");
        };
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..], b"topic");
        assert_eq!(frames[1].len(), 300);
        let Some(Decoded::Command(ping)) = decoder.decode(&mut buffer).expect("valid") else {
            panic!("a command");
        };
        assert_eq!(&ping.name[..], b"PING");
        assert_eq!(&ping.ping_context().expect("context")[..], b"ctx");
        let mut pong = BytesMut::new();
        ping.put_pong(&mut pong).expect("pong");
        assert_eq!(&pong[..], b"\x04\x08\x04PONGctx");
        assert!(buffer.is_empty());
    }

    fn put_ping_with(out: &mut BytesMut, context: &[u8]) {
        let mut data = vec![0, 10];
        data.extend_from_slice(context);
        put_command(out, b"PING", &data);
    }

    #[test]
    fn ready_metadata_is_read_case_insensitively() {
        let mut buffer = BytesMut::new();
        put_ready(&mut buffer, b"SUB");
        let Some(Decoded::Command(ready)) =
            Decoder::new(16, 16).decode(&mut buffer).expect("valid")
        else {
            panic!("a command");
        };
        assert_eq!(&ready.name[..], b"READY");
        let socket_type = ready.property(b"socket-type").expect("well formed");
        assert_eq!(socket_type.as_deref(), Some(&b"SUB"[..]));
        assert_eq!(ready.property(b"Identity").expect("well formed"), None);
    }

    #[test]
    fn a_declared_size_over_the_discard_bound_is_refused_from_its_header_alone() {
        for declared in [2049u64, 1 << 36, 1 << 63, u64::MAX] {
            let mut buffer = BytesMut::new();
            buffer.put_u8(FLAG_LONG);
            buffer.put_u64(declared);
            let mut decoder = Decoder::new(1024, 2048);
            let refused = decoder.decode(&mut buffer);
            assert_eq!(
                refused,
                Err(FrameError::FrameTooLarge {
                    declared,
                    limit: 1024,
                    buffered: 0
                })
            );
        }
        // The limit is the whole message's: the second frame does not fit beside the first
        // (and, with no room to drop it, ends the connection).
        let mut buffer = message_bytes(&[&[b'a'; 600], &[b'b'; 600]]);
        let mut decoder = Decoder::new(1024, 1024);
        assert_eq!(
            decoder.decode(&mut buffer).map_err(|e| e.reason()),
            Err("frame_too_large")
        );
        assert_eq!(decoder.partial_message().len(), 1);
        let mut command = BytesMut::new();
        command.put_u8(FLAG_COMMAND | FLAG_LONG);
        command.put_u64(MAX_COMMAND_BYTES + 1);
        assert_eq!(
            Decoder::new(1024, 1 << 20)
                .decode(&mut command)
                .map_err(|e| e.reason()),
            Err("command_too_large")
        );
    }

    #[test]
    fn empty_frames_cannot_pile_up_without_bound() {
        let empty: &[u8] = b"";
        let frames = vec![empty; MAX_FRAMES + 1];
        let mut buffer = message_bytes(&frames);
        assert_eq!(
            Decoder::new(1024, 1024).decode(&mut buffer),
            Err(FrameError::TooManyFrames)
        );
    }

    #[test]
    fn a_message_over_the_limit_is_dropped_unbuffered_and_the_next_one_decoded() {
        let mut decoder = Decoder::new(1024, 1 << 20);
        let mut buffer = message_bytes(&[b"topic", &[b'x'; 5000], &[b'y'; 3000]]);
        put_ping_with(&mut buffer, b"p");
        buffer.extend_from_slice(&message_bytes(&[b"next", b"{}"]));
        // Only the header is needed to know: the body is dropped as it comes.
        let mut arriving = buffer.split_to(2 + 5 + 9);
        assert_eq!(
            decoder.decode(&mut arriving),
            Ok(Some(Decoded::Oversized {
                frames: vec![Bytes::from_static(b"topic")],
                violation: FrameError::FrameTooLarge {
                    declared: 5000,
                    limit: 1024,
                    buffered: 5
                }
            }))
        );
        assert!(decoder.is_discarding());
        while buffer.len() > 1000 {
            arriving.extend_from_slice(&buffer.split_to(700));
            assert_eq!(decoder.decode(&mut arriving), Ok(None));
            assert!(arriving.is_empty(), "nothing of the message is kept");
            assert_eq!(decoder.wanted(&arriving), 1);
        }
        arriving.extend_from_slice(&buffer);
        let Some(Decoded::Command(ping)) = decoder.decode(&mut arriving).expect("valid") else {
            panic!("the PING after the dropped message");
        };
        assert_eq!(&ping.name[..], b"PING");
        assert!(!decoder.is_discarding());
        assert_eq!(
            decoder.decode(&mut arriving),
            Ok(Some(Decoded::Message(vec![
                Bytes::from_static(b"next"),
                Bytes::from_static(b"{}")
            ])))
        );
    }

    #[test]
    fn a_dropped_message_that_keeps_declaring_past_the_bound_is_refused() {
        let mut decoder = Decoder::new(1024, 2048);
        let mut buffer = message_bytes(&[&[b'a'; 1000], &[b'b'; 1000], &[b'c'; 100]]);
        assert!(matches!(
            decoder.decode(&mut buffer),
            Ok(Some(Decoded::Oversized { .. }))
        ));
        assert_eq!(
            decoder.decode(&mut buffer),
            Err(FrameError::FrameTooLarge {
                declared: 100,
                limit: 1024,
                buffered: 0
            })
        );
    }

    #[test]
    fn what_is_wanted_never_exceeds_the_limit() {
        let mut decoder = Decoder::new(1024, 1 << 20);
        let mut buffer = BytesMut::new();
        assert_eq!(decoder.wanted(&buffer), 9);
        buffer.put_u8(FLAG_LONG);
        buffer.put_u64(1000);
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        assert_eq!(decoder.wanted(&buffer), 1000);
        let mut over = BytesMut::new();
        over.put_u8(FLAG_LONG);
        over.put_u64(1 << 19);
        assert_eq!(decoder.wanted(&over), 1);
    }

    proptest! {
        /// Whatever bytes come, decoding never panics and never buffers a message over the
        /// limit: it yields, drops, waits for bytes it may take, or refuses.
        #[test]
        fn arbitrary_bytes_are_decoded_refused_or_waited_for(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            limit in 0usize..2048,
            discard in 0u64..8192,
        ) {
            let mut decoder = Decoder::new(limit, discard);
            let mut buffer = BytesMut::from(&bytes[..]);
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Some(Decoded::Message(frames))) => {
                        let total: usize = frames.iter().map(Bytes::len).sum();
                        prop_assert!(total <= limit);
                        prop_assert!(frames.len() <= MAX_FRAMES);
                    }
                    Ok(Some(Decoded::Command(command))) => {
                        prop_assert!(command.data.len() as u64 <= MAX_COMMAND_BYTES);
                    }
                    Ok(Some(Decoded::Oversized { frames, .. })) => {
                        let total: usize = frames.iter().map(Bytes::len).sum();
                        prop_assert!(total <= limit);
                    }
                    Ok(None) => {
                        prop_assert!(decoder.wanted(&buffer) <= limit.max(MAX_COMMAND_BYTES as usize) + 9);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        /// Messages under the limit come out whole and in order however the bytes are cut.
        #[test]
        fn messages_survive_any_split_of_the_stream(
            messages in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 1..4), 1..6),
            cuts in prop::collection::vec(1usize..97, 1..40),
        ) {
            let mut wire = BytesMut::new();
            for frames in &messages {
                let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                wire.extend_from_slice(&message_bytes(&slices));
            }
            let mut decoder = Decoder::new(1200, 1200);
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let take = (*cut.next().unwrap_or(&1)).min(rest.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                while let Some(item) = decoder.decode(&mut buffer).expect("valid stream") {
                    decoded.push(item);
                }
            }
            let expected: Vec<Decoded> = messages
                .iter()
                .map(|frames| Decoded::Message(frames.iter().map(|f| Bytes::copy_from_slice(f)).collect()))
                .collect();
            prop_assert_eq!(decoded, expected);
        }

        /// Messages over the limit (within the discard bound) are reported once, with the
        /// frames before the one that broke the limit, and cost no other message, however the
        /// bytes are cut.
        #[test]
        fn oversized_messages_are_dropped_and_the_others_survive_any_split(
            messages in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..800), 1..4), 1..8),
            cuts in prop::collection::vec(1usize..700, 1..40),
        ) {
            const LIMIT: usize = 1200;
            let mut wire = BytesMut::new();
            let mut expected = Vec::new();
            for frames in &messages {
                let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                wire.extend_from_slice(&message_bytes(&slices));
                let mut kept = Vec::new();
                let mut size = 0;
                let mut oversized = None;
                for frame in frames {
                    if size + frame.len() > LIMIT {
                        oversized = Some(FrameError::FrameTooLarge {
                            declared: frame.len() as u64,
                            limit: LIMIT,
                            buffered: size,
                        });
                        break;
                    }
                    size += frame.len();
                    kept.push(Bytes::copy_from_slice(frame));
                }
                expected.push(match oversized {
                    Some(violation) => Decoded::Oversized { frames: kept, violation },
                    None => Decoded::Message(kept),
                });
            }
            // At most 3 × 799 bytes declared: all within the bound.
            let mut decoder = Decoder::new(LIMIT, 2400);
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let take = (*cut.next().unwrap_or(&1)).min(rest.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                while let Some(item) = decoder.decode(&mut buffer).expect("within the bound") {
                    decoded.push(item);
                }
                prop_assert!(buffer.len() <= LIMIT + 9 + 700);
            }
            prop_assert!(!decoder.is_discarding());
            prop_assert_eq!(decoded, expected);
        }
    }
}
