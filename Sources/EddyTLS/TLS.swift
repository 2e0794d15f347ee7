import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import StreamModel
import Synchronization

/// The certificate files of a server (`--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-mutual`; docs/security.md).
public struct ServerTLSFiles: Sendable, Equatable {
    /// PEM file with the server's certificate, then any intermediate certificates.
    public var certificate: String
    /// PEM file with the certificate's private key.
    public var key: String
    /// PEM file with the certificate authorities this server trusts: it checks the store's and the other
    /// nodes' certificates against them when it connects to them, and the clients' certificates when `mutual`.
    /// Without it, the system's trusted authorities.
    public var authority: String?
    /// Whether every connecting client must present a certificate signed by `authority` (mutual TLS).
    public var mutual: Bool

    /// Files for a server.
    public init(certificate: String, key: String, authority: String? = nil, mutual: Bool = false) {
        self.certificate = certificate
        self.key = key
        self.authority = authority
        self.mutual = mutual
    }
}

/// The TLS side of a server's listener: a context built from its certificate files, which ``reload()`` replaces
/// (SIGHUP). A connection keeps the context it started with, so a reload drops no connection; new connections
/// get the new certificate.
///
/// It also holds the ``ClientTLS`` the server connects out with (a node to the store and to the other nodes),
/// presenting the same certificate, so servers that require client certificates (`mutual`) know each other.
public final class ServerTLS: Sendable {
    /// The files it loads.
    public let files: ServerTLSFiles
    /// How this server connects to the other servers: trusting `files.authority`, presenting its certificate.
    public let outgoing: ClientTLS
    private let context: Mutex<NIOSSLContext>

    /// Loads the files.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the file that is missing or not valid PEM, or the key
    ///   that does not belong to the certificate.
    public init(files: ServerTLSFiles) throws(EddyError) {
        if files.mutual, files.authority == nil {
            throw EddyError(
                .invalidArgument, "--tls-mutual needs --tls-ca: the authority that signs the clients' certificates")
        }
        self.files = files
        self.context = Mutex(try Self.makeContext(files))
        self.outgoing = try ClientTLS(
            authority: files.authority, certificate: files.certificate, key: files.key)
    }

    /// Reads the files again; connections made from now on use them. On error the old certificate stays in use.
    public func reload() throws(EddyError) {
        let fresh = try Self.makeContext(files)
        try outgoing.reload()
        context.withLock { $0 = fresh }
    }

    /// The not-after date of the certificate now served (for the log and for checks).
    public var certificateExpiry: Date? {
        (try? NIOSSLCertificate.fromPEMFile(files.certificate).first).map {
            Date(timeIntervalSince1970: TimeInterval($0.notValidAfter))
        }
    }

    /// Adds the TLS handler (with the current context) to a new connection's pipeline, then a deadline that closes
    /// the connection when its handshake has not finished within `handshakeTimeout` (a client that opens TLS and
    /// stalls does not hold a connection).
    public func addHandlers(
        to pipeline: ChannelPipeline.SynchronousOperations, handshakeTimeout: TimeAmount
    ) throws {
        try pipeline.addHandler(NIOSSLServerHandler(context: context.withLock { $0 }))
        try pipeline.addHandler(HandshakeDeadline(timeout: handshakeTimeout))
    }

    private static func makeContext(_ files: ServerTLSFiles) throws(EddyError) -> NIOSSLContext {
        let chain = try loadCertificates(files.certificate, what: "certificate (--tls-cert)")
        let key = try loadKey(files.key)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if let authority = files.authority {
            configuration.trustRoots = .certificates(try loadCertificates(authority, what: "authority (--tls-ca)"))
        }
        // A client's certificate names no host the server could check: the signature is what counts.
        configuration.certificateVerification = files.mutual ? .noHostnameVerification : .none
        return try buildContext(configuration, files: "\(files.certificate) and \(files.key)")
    }
}

/// The TLS side of a client (`--tls-ca`): it verifies the server's certificate against the given authorities (or
/// the system's) and the host it connects to, and presents a certificate of its own when it has one (mutual TLS).
public final class ClientTLS: Sendable {
    /// PEM file of the trusted authorities; nil: the system's.
    public let authority: String?
    /// The client's own certificate and key files, for servers that require one.
    public let certificate: String?
    /// The key of `certificate`.
    public let key: String?
    private let context: Mutex<NIOSSLContext>

    /// Loads the files.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming a file that is missing or not valid PEM.
    public init(authority: String?, certificate: String? = nil, key: String? = nil) throws(EddyError) {
        guard (certificate == nil) == (key == nil) else {
            throw EddyError(.invalidArgument, "a client certificate needs its key, and a key its certificate")
        }
        self.authority = authority
        self.certificate = certificate
        self.key = key
        self.context = Mutex(try Self.makeContext(authority: authority, certificate: certificate, key: key))
    }

    /// Reads the files again (a server's SIGHUP reloads the certificate it presents to the other servers).
    public func reload() throws(EddyError) {
        let fresh = try Self.makeContext(authority: authority, certificate: certificate, key: key)
        context.withLock { $0 = fresh }
    }

    /// A handler that opens TLS to `host`. A host name is sent as SNI and must be among the certificate's DNS names
    /// (swift-nio-ssl also accepts a certificate naming the IP address connected to); an IP address must be among
    /// its IP addresses.
    public func makeHandler(host: String) throws -> NIOSSLClientHandler {
        let context = self.context.withLock { $0 }
        return try NIOSSLClientHandler(context: context, serverHostname: Self.isIPAddress(host) ? nil : host)
    }

    /// Adds the TLS handler for `host` to a new connection's pipeline; the future completes when the handshake
    /// has, or fails with an ``EddyError/Code/connectionFailed`` that says why (``TLSFailure``).
    public func addHandlers(
        to pipeline: ChannelPipeline.SynchronousOperations, host: String
    ) throws -> EventLoopFuture<Void> {
        let promise = pipeline.eventLoop.makePromise(of: Void.self)
        try pipeline.addHandler(try makeHandler(host: host))
        try pipeline.addHandler(HandshakeWaiter(promise: promise))
        return promise.futureResult
    }

    private static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// The TLS configuration these files make, for other clients (the admin API's HTTPS, S3).
    public func configuration() throws(EddyError) -> TLSConfiguration {
        try Self.makeConfiguration(authority: authority, certificate: certificate, key: key)
    }

    private static func makeContext(
        authority: String?, certificate: String?, key: String?
    ) throws(EddyError) -> NIOSSLContext {
        try buildContext(
            try makeConfiguration(authority: authority, certificate: certificate, key: key),
            files: authority ?? "the system's authorities")
    }

    private static func makeConfiguration(
        authority: String?, certificate: String?, key: String?
    ) throws(EddyError) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let authority {
            configuration.trustRoots = .certificates(try loadCertificates(authority, what: "authority (--tls-ca)"))
        }
        if let certificate, let key {
            configuration.certificateChain = try loadCertificates(certificate, what: "certificate").map {
                .certificate($0)
            }
            configuration.privateKey = .privateKey(try loadKey(key))
        }
        return configuration
    }
}

/// What a TLS failure means, for error messages: BoringSSL's reasons are terse.
public enum TLSFailure {
    /// `error`, described for a person when it is a TLS error; nil when it is not one.
    public static func describe(_ error: any Error) -> String? {
        if let rejected = rejectedCertificate(error) { return rejected }
        switch error {
        case let error as NIOSSLError:
            let text = "\(error)"
            if text.contains("CERTIFICATE_REQUIRED") || text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") {
                return "the server requires a client certificate (mutual TLS) and none was presented"
            }
            if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST")
                || text.contains("PACKET_LENGTH_TOO_LONG")
            {
                return "the peer does not speak TLS (a plain-text server or client?) (\(text))"
            }
            return "TLS failed: \(text)"
        case let error as BoringSSLError:
            return "TLS failed: \(error)"
        default:
            return nil
        }
    }

    /// Why the server's certificate was rejected, when that is what `error` is (it will not change by itself:
    /// not worth a retry); nil for any other error.
    public static func rejectedCertificate(_ error: any Error) -> String? {
        switch error {
        case let error as NIOSSLExtraError where error == .failedToValidateHostname:
            return "the server's certificate does not name the host connected to (\(error))"
        case let error as NIOSSLError where "\(error)".contains("CERTIFICATE_VERIFY_FAILED"):
            return
                "the server's certificate is not trusted: expired, not yet valid, or not signed by an authority this side trusts (--tls-ca) (\(error))"
        default:
            return nil
        }
    }
}

/// Closes a connection whose TLS handshake has not completed within its timeout.
final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            timer?.cancel()
            timer = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func start(_ context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}

func loadCertificates(_ path: String, what: String) throws(EddyError) -> [NIOSSLCertificate] {
    guard FileManager.default.fileExists(atPath: path) else {
        throw EddyError(.invalidArgument, "TLS \(what) file \(path) does not exist")
    }
    let certificates: [NIOSSLCertificate]
    do {
        certificates = try NIOSSLCertificate.fromPEMFile(path)
    } catch {
        throw EddyError(.invalidArgument, "TLS \(what) file \(path) is not PEM certificates: \(error)")
    }
    guard !certificates.isEmpty else {
        throw EddyError(.invalidArgument, "TLS \(what) file \(path) holds no certificate")
    }
    return certificates
}

func loadKey(_ path: String) throws(EddyError) -> NIOSSLPrivateKey {
    guard FileManager.default.fileExists(atPath: path) else {
        throw EddyError(.invalidArgument, "TLS key file \(path) (--tls-key) does not exist")
    }
    do {
        return try NIOSSLPrivateKey(file: path, format: .pem)
    } catch {
        throw EddyError(.invalidArgument, "TLS key file \(path) (--tls-key) is not a PEM private key: \(error)")
    }
}

func buildContext(_ configuration: TLSConfiguration, files: String) throws(EddyError) -> NIOSSLContext {
    do {
        return try NIOSSLContext(configuration: configuration)
    } catch {
        throw EddyError(
            .invalidArgument, "cannot set up TLS with \(files) (does the key belong to the certificate?): \(error)")
    }
}

/// Completes a promise when the client's TLS handshake does, or fails it with the reason the handshake failed.
final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            promise.succeed()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(EddyError(.connectionFailed, TLSFailure.describe(error) ?? "TLS failed: \(error)"))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(EddyError(.connectionFailed, "the server closed the connection during the TLS handshake"))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(EddyError(.connectionFailed, "the TLS handshake did not finish"))
    }
}
