import Logging
import StreamModel
import WireProtocol

/// The audit log: one line per refused connection or request and per admin action (create, delete, truncate,
/// admin commands), on the `eddy.audit` logger, with the principal and the peer. It goes wherever the server's
/// log goes (`--log-format json` makes it machine-readable; `--log-levels eddy.audit=...` tunes it).
public struct AuditLog: Sendable {
    /// The logger the entries go to.
    public var logger: Logger

    /// An audit log on `logger` (by default the `eddy.audit` label).
    public init(logger: Logger = Logger(label: "eddy.audit")) { self.logger = logger }

    /// A connection whose token was refused.
    public func refusedConnection(peer: String, _ error: EddyError) {
        logger.warning(
            "refused",
            metadata: ["peer": "\(peer)", "request": "hello", "code": "\(error.code)", "why": "\(error.message)"])
    }

    /// A request its principal may not send.
    public func refused(_ request: Request, by principal: Principal, peer: String, _ error: EddyError) {
        logger.warning(
            "refused",
            metadata: [
                "principal": "\(principal.name)", "peer": "\(peer)", "request": "\(request.type)",
                "code": "\(error.code)", "why": "\(error.message)",
            ])
    }

    /// An admin API call its principal may not make.
    public func refusedAdmin(path: String, by principal: Principal, _ error: EddyError) {
        logger.warning(
            "refused",
            metadata: [
                "principal": "\(principal.name)", "request": "admin http \(path)", "code": "\(error.code)",
                "why": "\(error.message)",
            ])
    }

    /// An admin API call that changes something (dead-letter redrive and purge).
    public func adminCall(path: String, by principal: Principal) {
        logger.notice("admin action", metadata: ["principal": "\(principal.name)", "request": "admin http \(path)"])
    }

    /// Logs `request` when it is an admin action (it needs `admin` on its stream or on `*`, and is not a read of
    /// stats nor a message between nodes), with what it acted on. The nodes' own upkeep of their queue journals
    /// (streams of the internal scope `_eddy`) is not an admin action.
    public func allowed(_ request: Request, by principal: Principal, peer: String) {
        let target: String
        switch request {
        case .createStream(let name, _), .deleteStream(let name):
            guard name.scope != StreamName.internalScope else { return }
            target = name.description
        case .truncate(let segment, let offset):
            guard segment.stream.scope != StreamName.internalScope else { return }
            target = "\(segment) at \(offset)"
        case .admin(let command, _): target = command
        default: return
        }
        logger.notice(
            "admin action",
            metadata: [
                "principal": "\(principal.name)", "peer": "\(peer)", "request": "\(request.type)",
                "target": "\(target)",
            ])
    }
}
