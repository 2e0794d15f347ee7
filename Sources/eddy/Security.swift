import ArgumentParser
import EddyAuth
import EddyTLS
import Foundation
import Logging
import StreamModel
import WireProtocol

/// The security flags of the servers (`eddy store`, `eddy node`, `eddy up`): how clients authenticate, and the
/// service identity nodes present to the store and to each other (docs/security.md).
struct SecurityOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "Client authentication: off, tokens:FILE (a JSON tokens file), jwt:KEYFILE or k8s:FILE (Kubernetes service-account tokens)."
    )
    var auth: String = "off"

    @Option(
        name: .long,
        help: "The token a node presents to the store and to other nodes: a principal with admin on * there.")
    var serviceToken: String?

    @Option(name: .long, help: "Connections a server serves at once; the next are answered overloaded.")
    var maxConnections: Int = 16_384

    @Option(name: .long, help: "Seconds one frame may take to arrive once it has started (slow clients are cut).")
    var frameTimeout: Double = 30

    @Option(name: .long, help: "Seconds a connection may see nothing read or written before it is closed.")
    var idleTimeout: Double = 600

    @Option(
        name: .long, help: "Requests a second each principal may send (0: no limit; admins of * are never limited).")
    var tenantRequests: Double = 0

    @Option(name: .long, help: "Bytes a second each principal may send and be served (0: no limit).")
    var tenantBytes: Int = 0

    @Option(
        name: .long,
        help: "PEM certificate of the listeners and the admin port: TLS on (SIGHUP reloads it; needs --tls-key).")
    var tlsCert: String?

    @Option(name: .long, help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(
        name: .long,
        help: "PEM authorities trusted for the other servers' certificates (and clients' with --tls-mutual).")
    var tlsCa: String?

    @Flag(name: .long, help: "Require a client certificate signed by --tls-ca on every connection (mutual TLS).")
    var tlsMutual = false

    func validate() throws {
        _ = try AuthSetting(parsing: auth)
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard tlsCert != nil || (tlsCa == nil && !tlsMutual) else {
            throw ValidationError("--tls-ca and --tls-mutual need --tls-cert and --tls-key (TLS on)")
        }
        try limits.validate()
        guard tenantRequests >= 0, tenantBytes >= 0 else {
            throw ValidationError("--tenant-requests and --tenant-bytes must be 0 (no limit) or more")
        }
    }

    /// `--tenant-requests`, `--tenant-bytes`.
    func rates() -> TenantRates {
        TenantRates(requestsPerSecond: tenantRequests, bytesPerSecond: Double(tenantBytes))
    }

    /// `--max-connections`, `--frame-timeout`, `--idle-timeout`.
    var limits: ConnectionLimits {
        var l = ConnectionLimits()
        l.maxConnections = maxConnections
        l.frameTimeout = .milliseconds(Int64(frameTimeout * 1000))
        l.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        return l
    }

    /// The access control `--auth` names, loaded; with authentication off, says so loudly in the log.
    func access(logger: Logger, server: String) async throws -> AccessControl {
        let access = try await AccessControl.load(try AuthSetting(parsing: auth))
        if !access.enabled {
            logger.warning(
                "authentication is OFF: any client may read, write and delete every stream (--auth tokens:FILE turns it on; docs/security.md)",
                metadata: ["server": "\(server)"])
        }
        return access
    }

    /// The node's service token, checked against the node's own access control: with authentication on, it must
    /// be given and be an administrator there (the store and the other nodes share the tokens).
    func nodeServiceToken(_ access: AccessControl) async throws -> String {
        let token = serviceToken ?? ""
        guard access.enabled else { return token }
        guard !token.isEmpty else {
            throw EddyError(
                .invalidArgument,
                "with --auth \(access.setting) a node needs --service-token: its identity at the store and the other nodes"
            )
        }
        let principal = try await access.principal(for: token)
        guard principal.isAdministrator else {
            throw EddyError(
                .invalidArgument,
                "the --service-token's principal \(principal.name) needs admin on * (it forwards requests and reads every stream)"
            )
        }
        return token
    }

    /// The listeners' TLS (`--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-mutual`), loaded; nil when TLS is off.
    func serverTLS(logger: Logger, server: String) throws -> ServerTLS? {
        guard let tlsCert, let tlsKey else {
            logger.notice(
                "TLS is off: traffic is plain text (--tls-cert and --tls-key turn it on; docs/security.md)",
                metadata: ["server": "\(server)"])
            return nil
        }
        let tls = try ServerTLS(
            files: ServerTLSFiles(certificate: tlsCert, key: tlsKey, authority: tlsCa, mutual: tlsMutual))
        logger.info(
            "TLS on",
            metadata: [
                "server": "\(server)", "certificate": "\(tlsCert)", "mutual": "\(tlsMutual)",
                "expires": "\(tls.certificateExpiry.map { "\($0)" } ?? "?")",
            ])
        return tls
    }

    var settings: [String: String] {
        [
            "security.auth": auth, "security.service-token": serviceToken == nil ? "" : "(set)",
            "security.tls-cert": tlsCert ?? "", "security.tls-key": tlsKey ?? "", "security.tls-ca": tlsCa ?? "",
            "security.tls-mutual": "\(tlsMutual)",
            "limits.max-connections": "\(maxConnections)", "limits.frame-timeout": "\(frameTimeout)",
            "limits.idle-timeout": "\(idleTimeout)", "limits.tenant-requests": "\(tenantRequests)",
            "limits.tenant-bytes": "\(tenantBytes)",
        ]
    }
}

/// How the client commands prove who they are and check whom they talk to: `--token` (the bearer token sent in
/// the hello and to the admin API) and TLS (`--tls-ca`, and for servers with `--tls-mutual` a certificate).
struct ClientCredentials: ParsableArguments {
    @Option(name: .long, help: "Bearer token for servers with authentication on (else $EDDY_TOKEN).")
    var token: String?

    @Option(name: .long, help: "Connect over TLS, trusting the authorities in this PEM file (else $EDDY_TLS_CA).")
    var tlsCa: String?

    @Option(name: .long, help: "Client certificate (PEM) for servers that require one (--tls-mutual).")
    var tlsCert: String?

    @Option(name: .long, help: "Private key (PEM) of --tls-cert.")
    var tlsKey: String?

    /// `--token`, else `$EDDY_TOKEN`, else none.
    var bearer: String { token ?? ProcessInfo.processInfo.environment["EDDY_TOKEN"] ?? "" }

    /// `--tls-ca`, else `$EDDY_TLS_CA`; nil: plain TCP.
    var authority: String? {
        tlsCa ?? ProcessInfo.processInfo.environment["EDDY_TLS_CA"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The client's TLS, loaded; nil when neither an authority nor a certificate is given (plain TCP).
    func tls() throws -> ClientTLS? {
        guard authority != nil || tlsCert != nil else { return nil }
        return try ClientTLS(authority: authority, certificate: tlsCert, key: tlsKey)
    }
}

/// Installs the SIGHUP handler of a server process: it reloads the certificates (`--tls-cert`, `--tls-key`,
/// `--tls-ca`; new connections get them, open ones keep theirs) and the `--auth` tokens or key file, and logs each
/// outcome. A file that fails to load leaves the old one in use. Cancel the returned source when serving ends.
func reloadOnHangup(tls: ServerTLS?, access: AccessControl, logger: Logger) -> DispatchSourceSignal {
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    source.setEventHandler {
        Task {
            if let tls {
                do throws(EddyError) {
                    try tls.reload()
                    logger.notice(
                        "TLS certificate reloaded (SIGHUP)",
                        metadata: [
                            "certificate": "\(tls.files.certificate)",
                            "expires": "\(tls.certificateExpiry.map { "\($0)" } ?? "?")",
                        ])
                } catch {
                    logger.error("TLS reload failed; the old certificate stays in use: \(error.message)")
                }
            }
            if access.enabled {
                do throws(EddyError) {
                    try await access.reload()
                    logger.notice("\(access.setting) reloaded (SIGHUP)")
                } catch {
                    logger.error("\(access.setting) reload failed; the old file stays in use: \(error.message)")
                }
            }
        }
    }
    source.resume()
    return source
}

/// The set-up of `eddy up --secure`, made once under `DATA/secure/` and reused on the next start: an authority and
/// a certificate for the servers' hosts (TLS everywhere), and a tokens file with two principals, `eddy-service`
/// (the nodes' service identity) and `demo` (read, write and admin on every scope: the token printed for the user).
struct SecureDemo {
    let folder: String
    let authority: String
    let certificate: String
    let key: String
    let tokens: String
    let serviceToken: String
    let demoToken: String

    /// Loads the folder's files, or makes them (a certificate naming `hosts` plus localhost and 127.0.0.1).
    static func prepare(data: String, hosts: [String]) throws -> SecureDemo {
        let folder = URL(fileURLWithPath: data + "/secure").standardizedFileURL.path
        let files = (
            authority: folder + "/ca.pem", certificate: folder + "/server.pem", key: folder + "/server-key.pem",
            tokens: folder + "/tokens.json"
        )
        let manager = FileManager.default
        if ![files.authority, files.certificate, files.key, files.tokens].allSatisfy({ manager.fileExists(atPath: $0) })
        {
            let names = Array(Set(hosts + ["localhost", "127.0.0.1"])).sorted()
            _ = try CertificateAuthority(name: "eddy up --secure").writeFiles(to: folder, name: "server", hosts: names)
            let document: [String: Any] = [
                "tokens": [
                    [
                        "token": randomToken(), "principal": "eddy-service",
                        "grants": [["scope": "*", "roles": ["read", "write", "admin"]]],
                    ],
                    [
                        "token": randomToken(), "principal": "demo",
                        "grants": [["scope": "*", "roles": ["read", "write", "admin"]]],
                    ],
                ]
            ]
            let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: files.tokens))
            try manager.setAttributes([.posixPermissions: 0o600], ofItemAtPath: files.tokens)
        }
        guard
            let object = try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: files.tokens)))
                as? [String: Any], let entries = object["tokens"] as? [[String: Any]]
        else {
            throw EddyError(
                .invalidArgument, "\(files.tokens) is not a tokens file: remove \(folder) to make a new set-up")
        }
        func token(of principal: String) throws -> String {
            guard let token = entries.first(where: { $0["principal"] as? String == principal })?["token"] as? String
            else {
                throw EddyError(
                    .invalidArgument, "\(files.tokens) has no \(principal) token: remove \(folder) to make a new set-up"
                )
            }
            return token
        }
        return SecureDemo(
            folder: folder, authority: files.authority, certificate: files.certificate, key: files.key,
            tokens: files.tokens, serviceToken: try token(of: "eddy-service"), demoToken: try token(of: "demo"))
    }

    /// `security` with this set-up's authentication and TLS.
    func apply(to security: SecurityOptions) -> SecurityOptions {
        var s = security
        s.auth = "tokens:" + tokens
        s.serviceToken = serviceToken
        s.tlsCert = certificate
        s.tlsKey = key
        s.tlsCa = authority
        return s
    }

    private static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", generator.next() as UInt8) }.joined()
    }
}
