/// EddyError is the one error type that crosses module and network boundaries.
///
/// Every failure a user can cause (a bad name, an unknown stream, an offset past the end, a corrupt
/// frame) maps to a ``Code`` that travels in the wire protocol's error frame, and a message meant for
/// a person. The numeric codes are part of the protocol (docs/protocol.md): never renumber them.
public struct EddyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable number.
    public enum Code: UInt16, Sendable, CaseIterable {
        /// A stream or scope name breaks the naming rules.
        case invalidName = 1
        /// The stream does not exist.
        case streamNotFound = 2
        /// A stream of that name exists already.
        case streamExists = 3
        /// The segment number is out of the stream's range.
        case segmentNotFound = 4
        /// The segment is sealed: no more appends.
        case segmentSealed = 5
        /// The offset is past the segment's end.
        case offsetOutOfRange = 6
        /// The offset is below the segment's truncation point; the bytes are gone from the store.
        case truncated = 7
        /// The offset is not where an event starts, where one is required.
        case notEventBoundary = 8
        /// An event frame failed to parse or its CRC32C did not match.
        case malformedEvent = 9
        /// An append's event numbers overlap what the writer already wrote in a way a retry cannot.
        case eventNumberConflict = 10
        /// Bytes on disk failed their checksum; the message names file and offset.
        case corruptData = 11
        /// A protocol frame was over the negotiated maximum.
        case frameTooLarge = 12
        /// A protocol frame could not be parsed.
        case malformedFrame = 13
        /// A message type the receiver does not know.
        case unknownMessageType = 14
        /// The peer speaks a protocol version this build does not.
        case unsupportedVersion = 15
        /// An argument is out of range (segment count, sizes, timeouts).
        case invalidArgument = 16
        /// The server is shutting down.
        case shuttingDown = 17
        /// An I/O operation failed (the message says which and why).
        case ioError = 18
        /// The connection to the peer failed or closed.
        case connectionFailed = 19
        /// A forwarded request carried a ring view (epoch and member fingerprint) the receiving node does not
        /// share; the sender refreshes its view and tries again instead of waiting.
        case staleEpoch = 20
        /// A component the request needs (the store, the owning node) is down or unreachable right now.
        case unavailable = 21
        /// The request did not finish within its deadline.
        case timedOut = 22
        /// The node is at its limit (bytes in flight, connections) and could not take the request in time.
        case overloaded = 23
        /// The connection has no valid token (missing, unknown, expired or badly signed) where the server
        /// requires one; the server answers the hello with it and closes.
        case unauthorized = 24
        /// The principal is known but its grants do not allow this request on this stream (or server-wide).
        case forbidden = 25
        /// An append's first event number is past the next one its writer has in the segment: an earlier batch
        /// of that writer has not landed yet (it overtook it, for example on another connection after a failover).
        /// Retriable: sent again once the earlier batch landed, it is written.
        case eventNumberGap = 26
        /// Anything else: a bug.
        case internalError = 99
    }

    /// The stable code.
    public let code: Code
    /// A message for a person, naming the thing that was wrong.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Whether a client may send the same request again (to the same or another node) and expect it to work:
    /// the failure was about the path (a connection, a deadline, a ring change), not about the request.
    public var isRetriable: Bool {
        switch code {
        case .connectionFailed, .staleEpoch, .unavailable, .timedOut, .overloaded, .shuttingDown, .eventNumberGap: true
        default: false
        }
    }
}
