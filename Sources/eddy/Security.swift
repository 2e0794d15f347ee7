import ArgumentParser
import EddyAuth
import Foundation
import Logging
import StreamModel
import WireProtocol

/// The security flags of the servers (`eddy store`, `eddy node`, `eddy up`): how clients authenticate, and the
/// service identity nodes present to the store and to each other (docs/security.md).
struct SecurityOptions: ParsableArguments {
    @Option(name: .long, help: "Client authentication: off, tokens:FILE (a JSON tokens file) or jwt:KEYFILE.")
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

    @Option(name: .long, help: "Request bytes a second each principal may send (0: no limit).")
    var tenantBytes: Int = 0

    func validate() throws {
        _ = try AuthSetting(parsing: auth)
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

    var settings: [String: String] {
        [
            "security.auth": auth, "security.service-token": serviceToken == nil ? "" : "(set)",
            "limits.max-connections": "\(maxConnections)", "limits.frame-timeout": "\(frameTimeout)",
            "limits.idle-timeout": "\(idleTimeout)", "limits.tenant-requests": "\(tenantRequests)",
            "limits.tenant-bytes": "\(tenantBytes)",
        ]
    }
}

/// `--token` of the client commands: the bearer token sent in the hello (and to the admin API).
struct TokenOption: ParsableArguments {
    @Option(name: .long, help: "Bearer token for servers with authentication on (else $EDDY_TOKEN).")
    var token: String?

    /// `--token`, else `$EDDY_TOKEN`, else none.
    var bearer: String { token ?? ProcessInfo.processInfo.environment["EDDY_TOKEN"] ?? "" }
}
