import NIOCore
import StreamModel
import WireProtocol

extension AccessControl {
    /// Authenticates a hello's `token` and hands the outcome to `done` on `eventLoop`: at once (before returning)
    /// when authentication is off, else after the authenticator's check (a JWT's signature is checked off the
    /// event loop).
    public func authenticate(
        _ token: String, on eventLoop: any EventLoop,
        _ done: @escaping @Sendable (Result<Principal, EddyError>) -> Void
    ) {
        guard enabled else { return done(.success(.unrestricted)) }
        Task {
            let result: Result<Principal, EddyError>
            do throws(EddyError) {
                result = .success(try await principal(for: token))
            } catch {
                result = .failure(error)
            }
            eventLoop.execute { done(result) }
        }
    }
}

/// The start of a server connection, shared by the store and the nodes: the hello, its token checked
/// (``AccessControl/authenticate(_:on:_:)``), and the frames a client pipelines behind its hello held until the
/// check ends, to be served in order then. Event-loop confined, like the handler that owns it.
public struct HelloGate {
    /// Where the connection is.
    public enum Phase: Sendable {
        case awaitingHello
        /// The hello's token is being checked; frames wait.
        case authenticating
        case ready
        case closed
    }

    /// What the handler does with a frame it received.
    public enum Step {
        /// A hello: check its token, then call ``finish(_:)``.
        case authenticate(token: String, helloID: UInt32)
        /// Not a hello of this protocol: answer with the error and close.
        case refuse(helloID: UInt32, EddyError)
        /// A request of an authenticated connection.
        case serve(Frame)
        /// Nothing now (held for later, or the connection is closing).
        case wait
    }

    /// Where the connection is.
    public private(set) var phase = Phase.awaitingHello
    /// Who the connection is (``Principal/unrestricted`` until authenticated, and with authentication off).
    public private(set) var principal = Principal.unrestricted
    private var backlog: [Frame] = []

    /// A connection that has sent nothing yet.
    public init() {}

    /// Takes a received frame.
    public mutating func receive(_ frame: Frame) -> Step {
        switch phase {
        case .closed:
            return .wait
        case .awaitingHello:
            do throws(EddyError) {
                let token = try MessageCodec.acceptHello(frame)
                phase = .authenticating
                return .authenticate(token: token, helloID: frame.requestID)
            } catch {
                phase = .closed
                return .refuse(helloID: frame.requestID, error)
            }
        case .authenticating:
            backlog.append(frame)
            return .wait
        case .ready:
            return .serve(frame)
        }
    }

    /// Ends the check of the hello's token.
    /// - Returns: the frames that came behind the hello, to serve now in order; nil when the token was refused (the
    ///   handler answers the hello with the error and closes) or the connection closed meanwhile.
    public mutating func finish(_ result: Result<Principal, EddyError>) -> [Frame]? {
        guard phase == .authenticating else { return nil }
        defer { backlog = [] }
        switch result {
        case .failure:
            phase = .closed
            return nil
        case .success(let principal):
            self.principal = principal
            phase = .ready
            return backlog
        }
    }

    /// The connection is closing: nothing more is served.
    public mutating func close() {
        phase = .closed
        backlog = []
    }
}

/// What a server does with a request frame of an authenticated connection (``HelloGate/admit(_:access:rates:audit:peer:)``).
public enum Admission {
    /// Serve it.
    case admitted(Request)
    /// Refused: answer with the error, unless `answer` is false (a one-way message: credit, unsubscribe).
    case refused(EddyError, answer: Bool)
}

extension HelloGate {
    /// Parses a request frame and checks it, as every server does: the principal's grants (a refusal goes to the
    /// audit log), then the principal's rates; an allowed admin action is audited when authentication is on.
    public func admit(
        _ frame: Frame, access: AccessControl, rates: TenantRates, audit: AuditLog, peer: () -> String
    ) -> Admission {
        let request: Request
        do throws(EddyError) {
            request = try MessageCodec.request(frame)
        } catch {
            return .refused(error, answer: true)
        }
        let answered: Bool
        switch request {
        case .credit, .unsubscribe: answered = false
        default: answered = true
        }
        do throws(EddyError) {
            try principal.authorize(request)
        } catch {
            audit.refused(request, by: principal, peer: peer(), error)
            return .refused(error, answer: answered)
        }
        do throws(EddyError) {
            try rates.charge(principal, bytes: frame.body.readableBytes)
        } catch {
            return .refused(error, answer: answered)
        }
        if access.enabled { audit.allowed(request, by: principal, peer: peer()) }
        return .admitted(request)
    }
}

extension ChannelHandlerContext {
    /// The remote peer, for logs and audit entries.
    public var peerDescription: String { remoteAddress.map { "\($0)" } ?? "?" }
}
