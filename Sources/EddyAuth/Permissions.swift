import StreamModel
import WireProtocol

/// What a request needs from its principal: the one table both the store and the cache nodes check every
/// request against (docs/security.md lists it).
public enum Permission: Sendable, Equatable {
    /// Anyone connected may send it (the hello; a liveness ping; a subscription's own credit and unsubscribe,
    /// which act only on subscriptions of the same connection).
    case anyone
    /// A role on one stream.
    case stream(Role, StreamName)
    /// Any role on the stream: its metadata (segments, lengths), which readers and writers both need (a
    /// writer routes its events by the segment count).
    case metadata(StreamName)
    /// `admin` on `*`: server-wide actions (stats, admin commands) and the messages between nodes.
    case administrator(String)
    /// Anyone connected, but the answer holds only the streams the principal has some role on.
    case filteredListing
}

extension Request {
    /// What this request needs (``Permission``).
    public var permission: Permission {
        switch self {
        case .hello, .credit, .unsubscribe, .ping: .anyone
        case .listStreams: .filteredListing
        case .createStream(let name, _), .deleteStream(let name): .stream(.admin, name)
        case .streamInfo(let name): .metadata(name)
        case .segmentInfo(let segment): .metadata(segment.stream)
        case .read(let segment, _, _, _): .stream(.read, segment.stream)
        case .subscribe(let segment, _, _, _): .stream(.read, segment.stream)
        case .append(let segment, _, _, _), .writerState(let segment, _), .seal(let segment):
            .stream(.write, segment.stream)
        case .truncate(let segment, _): .stream(.admin, segment.stream)
        case .stats: .administrator("read server stats")
        case .admin(let command, _): .administrator("run the admin command '\(command)'")
        case .forwarded: .administrator("forward requests between nodes")
        case .heartbeat: .administrator("send ring heartbeats")
        }
    }
}

extension Principal {
    /// Refuses `request` unless the principal may send it (a listing is allowed: filter its answer with
    /// ``seesAny(_:)``).
    /// - Throws: ``EddyError/Code/forbidden``.
    public func authorize(_ request: Request) throws(EddyError) {
        switch request.permission {
        case .anyone, .filteredListing: return
        case .stream(let role, let name): try require(role, on: name)
        case .metadata(let name):
            guard seesAny(name) else { throw EddyError(.forbidden, "\(self.name) may not see \(name)") }
        case .administrator(let what): try requireAdministrator(what)
        }
    }
}
