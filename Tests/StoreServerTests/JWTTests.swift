import Crypto
import EddyAuth
import EddyTestSupport
import Foundation
import JWTKit
import NIOCore
import StoreClient
import StoreServer
import StreamModel
import Testing
import WireProtocol

/// `--auth jwt:KEYFILE`: HS256 and ES256 tokens made here with jwt-kit (as an identity provider would), checked by
/// the server's ``JWTAuthenticator``, and a real store that takes them in the hello.
@Suite("JWT authentication", .serialized)
struct JWTTests {
    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var grants: [Grant]
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static let secret = "an HS256 secret of at least 32 bytes, for tests"

    /// An identity provider: its signing keys, and the key file a server is given.
    struct Provider {
        let ecdsa = P256.Signing.PrivateKey()
        var keyFile: String {
            let pem = ecdsa.publicKey.pemRepresentation.replacingOccurrences(of: "\n", with: "\\n")
            return """
                {"issuer": "https://idp.test", "audience": "eddy",
                 "keys": [{"kid": "hs", "alg": "HS256", "secret": "\(JWTTests.secret)"},
                          {"kid": "es", "alg": "ES256", "public_key": "\(pem)"}]}
                """
        }

        func token(
            kid: String, subject: String = "alice", expires: TimeInterval = 300, issuer: String? = "https://idp.test",
            audience: String? = "eddy", grants: [Grant] = [Grant(scope: "tenant-a/*", roles: [.read])],
            hmacSecret: String = JWTTests.secret
        ) async throws -> String {
            let keys = JWTKeyCollection()
            if kid == "es" {
                await keys.add(ecdsa: try ES256PrivateKey(pem: ecdsa.pemRepresentation), kid: "es")
            } else {
                await keys.add(
                    hmac: HMACKey(from: hmacSecret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
            }
            let claims = Claims(
                sub: SubjectClaim(value: subject), exp: ExpirationClaim(value: Date().addingTimeInterval(expires)),
                nbf: nil, iss: issuer.map { IssuerClaim(value: $0) }, aud: audience.map { AudienceClaim(value: [$0]) },
                grants: grants)
            return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
        }
    }

    @Test("HS256 and ES256 tokens give their principal and grants; expired, forged, misdirected ones are refused")
    func verification() async throws {
        let idp = Provider()
        let auth = try await JWTAuthenticator.load(json: Data(idp.keyFile.utf8), source: "keys.json")
        let stream = try StreamName(parsing: "tenant-a/x")
        for kid in ["hs", "es"] {
            let alice = try await auth.principal(for: try await idp.token(kid: kid))
            #expect(alice.name == "alice" && alice.may(.read, on: stream), "\(kid)")
            #expect(!alice.may(.write, on: stream))
        }
        let other = Provider()  // another provider's ES256 key: a valid signature, but not by a known key
        var refused: [(String, String)] = [
            ("expired", try await idp.token(kid: "hs", expires: -60)),
            ("wrong secret", try await idp.token(kid: "hs", hmacSecret: "another secret of at least 32 bytes!!")),
            ("another signer", try await other.token(kid: "es")),
            ("unknown kid", try await idp.token(kid: "nope")),
            ("wrong issuer", try await idp.token(kid: "es", issuer: "https://evil.test")),
            ("no audience", try await idp.token(kid: "es", audience: nil)),
            ("not a JWT", "not.a.jwt"),
        ]
        // An HS256 token that claims to be signed with the ES256 key: the algorithm is the key's, not the token's.
        let hs = try await idp.token(kid: "hs")
        let parts = hs.split(separator: ".")
        let header = Data(#"{"alg":"HS256","kid":"es","typ":"JWT"}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
        refused.append(("algorithm not the key's", "\(header).\(parts[1]).\(parts[2])"))
        await expectUnauthorized(auth, refused)
    }

    @Test("bad key files are refused at start with the file named and the problem")
    func keyFiles() async throws {
        for (json, says) in [
            (#"{"keys": []}"#, "no keys"),
            (#"{"keys": [{"kid": "a", "alg": "HS256", "secret": "short"}]}"#, "at least 32 bytes"),
            (#"{"keys": [{"kid": "a", "alg": "RS256", "secret": "x"}]}"#, "HS256 or ES256"),
            (#"{"keys": [{"kid": "a", "alg": "ES256", "public_key": "not a pem"}]}"#, "P-256"),
            (#"{"keys": [{"kid": "a", "alg": "ES256"}]}"#, "public_key"),
            ("[]", "not valid"),
        ] {
            do {
                _ = try await JWTAuthenticator.load(json: Data(json.utf8), source: "k.json")
                Issue.record("accepted \(json)")
            } catch {
                #expect(error.code == .invalidArgument && error.message.contains("k.json"), "\(error)")
                #expect(error.message.contains(says), "\(json): \(error.message)")
            }
        }
    }

    @Test("a store with --auth jwt: a client's token in the hello, requests pipelined behind it served in order")
    func store() async throws {
        let idp = Provider()
        let access = AccessControl(
            setting: .jwt(path: "(test)"),
            authenticator: try await JWTAuthenticator.load(json: Data(idp.keyFile.utf8), source: "(test)"))
        let h = try await Harness(access: access)
        let admin = try await idp.token(kid: "es", subject: "ops", grants: [Grant(scope: "*", roles: [.admin])])
        let client = try await h.client(token: admin)
        let name = try StreamName(parsing: "tenant-a/events")
        try await client.createStream(name, segments: 1)
        await client.close()

        // The hello and two requests in one go, before any answer: the server checks the token first (off its
        // event loop) and then serves the requests, in order.
        let raw = try RawConnection(port: h.server.port)
        let reader = try await idp.token(kid: "hs", subject: "reader")
        raw.send(MessageCodec.frame(.hello(version: protocolVersion, token: reader), id: 1))
        raw.send(MessageCodec.frame(.streamInfo(name), id: 2))
        raw.send(MessageCodec.frame(.createStream(try StreamName(parsing: "tenant-a/x"), segments: 1), id: 3))
        let answers = try await offPool { (0..<3).map { _ in raw.receive() } }
        #expect(answers.map { $0?.requestID } == [1, 2, 3])
        let responses = answers.map { frame in frame.flatMap { try? MessageCodec.response($0) } }
        guard case .helloOK? = responses[0], case .streamInfo? = responses[1] else {
            Issue.record("the hello and the info were not answered in order: \(responses)")
            return
        }
        guard case .error(let refused)? = responses[2] else {
            Issue.record("the reader's create was not refused")
            return
        }
        #expect(refused.code == .forbidden && refused.message.contains("reader"))
        raw.close()

        let expired = try await idp.token(kid: "hs", expires: -10)
        do {
            _ = try await h.client(token: expired)
            Issue.record("an expired token was accepted")
        } catch {
            #expect((error as? EddyError)?.code == .unauthorized, "\(error)")
        }
        await h.shutdown()
    }
}

/// Checks that `auth` refuses each (what, token) as unauthorized.
func expectUnauthorized(_ auth: some Authenticator, _ refused: [(String, String)]) async {
    for (what, token) in refused {
        do {
            let p = try await auth.principal(for: token)
            Issue.record("\(what): accepted as \(p.name)")
        } catch {
            #expect(error.code == .unauthorized, "\(what): \(error)")
        }
    }
}
