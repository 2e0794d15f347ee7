import EddyTLS
import EddyTestSupport
import Foundation
import StoreClient
import StreamModel
import Testing
import WireProtocol

/// TLS on the store's listener with certificates made in-process: the happy path and every refusal.
@Suite("TLS", .serialized)
struct TLSTests {
    /// A round trip of requests that must work over the connection.
    func roundTrip(_ client: StoreClient, _ name: String) async throws {
        let stream = try StreamName(parsing: name)
        _ = try await client.send(.createStream(stream, segments: 1))
        guard case .streamInfo(let info) = try await client.send(.streamInfo(stream)) else {
            Issue.record("no stream info")
            return
        }
        #expect(info.name == stream)
    }

    /// The message of the error `body` throws (nil when it does not throw).
    func failure(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch let error as EddyError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test("a client that trusts the authority talks over TLS; plain clients and other authorities are refused")
    func happyPathAndRefusals() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let h = try await Harness(tls: try ServerTLS(files: try files.write("server")))
        let trusting = try ClientTLS(authority: files.caPath)
        let client = try await h.client(tls: trusting)
        try await roundTrip(client, "tls/a")
        await client.close()

        let plain = await failure { _ = try await h.client() }
        #expect(plain?.contains("speaks TLS") == true, "\(plain ?? "connected")")

        let other = try CertificateFiles()
        defer { other.remove() }
        let untrusted = await failure { _ = try await h.client(tls: try ClientTLS(authority: other.caPath)) }
        #expect(untrusted?.contains("not trusted") == true, "\(untrusted ?? "connected")")

        // The server keeps serving after the refusals.
        let again = try await h.client(tls: trusting)
        try await roundTrip(again, "tls/b")
        await again.close()
        await h.shutdown()
    }

    @Test("an expired certificate, one not yet valid, and one naming another host are refused by the client")
    func badServerCertificates() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let trusting = try ClientTLS(authority: files.caPath)
        let cases: [(String, ServerTLSFiles, String)] = [
            ("expired", try files.write("expired", notBefore: Date() - 7200, notAfter: Date() - 3600), "not trusted"),
            (
                "not yet valid", try files.write("future", notBefore: Date() + 3600, notAfter: Date() + 7200),
                "not trusted"
            ),
            ("wrong host", try files.write("elsewhere", hosts: ["10.9.9.9", "db.example"]), "does not name the host"),
        ]
        for (what, serverFiles, expected) in cases {
            let h = try await Harness(tls: try ServerTLS(files: serverFiles))
            let message = await failure { _ = try await h.client(tls: trusting) }
            #expect(message?.contains(expected) == true, "\(what): \(message ?? "connected")")
            await h.shutdown()
        }
    }

    @Test("a host name is checked against the certificate's DNS names (or the address connected to)")
    func hostName() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let trusting = try ClientTLS(authority: files.caPath)
        for (hosts, accepted) in [(["localhost"], true), (["db.example", "10.9.9.9"], false)] {
            let h = try await Harness(tls: try ServerTLS(files: try files.write("named", hosts: hosts)))
            let message = await failure {
                let c = try await StoreClient.connect(
                    to: ServerAddress(host: "localhost", port: h.server.port), tls: trusting)
                await c.close()
            }
            #expect((message == nil) == accepted, "\(hosts): \(message ?? "connected")")
            await h.shutdown()
        }
    }

    @Test("mutual TLS: a client without a certificate, or with one of another authority, is refused")
    func mutual() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        var serverFiles = try files.write("server")
        serverFiles.authority = files.caPath
        serverFiles.mutual = true
        let h = try await Harness(tls: try ServerTLS(files: serverFiles))

        let anonymous = await failure { _ = try await h.client(tls: try ClientTLS(authority: files.caPath)) }
        #expect(anonymous != nil, "a client without a certificate connected")

        let stranger = try CertificateAuthority(name: "stranger")
        let foreign = try files.write("foreign", issuer: stranger)
        let refused = await failure {
            _ = try await h.client(
                tls: try ClientTLS(authority: files.caPath, certificate: foreign.certificate, key: foreign.key))
        }
        #expect(refused != nil, "a client with another authority's certificate connected")

        let own = try files.write("client")
        let client = try await h.client(
            tls: try ClientTLS(authority: files.caPath, certificate: own.certificate, key: own.key))
        try await roundTrip(client, "mutual/a")
        await client.close()
        await h.shutdown()
    }

    @Test("a reload serves the new certificate to new connections and keeps the open ones")
    func reload() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let serverFiles = try files.write("server")
        let tls = try ServerTLS(files: serverFiles)
        let h = try await Harness(tls: tls)
        let old = try ClientTLS(authority: files.caPath)
        let open = try await h.client(tls: old)
        try await roundTrip(open, "reload/a")

        // A new authority signs the new certificate, written over the old files.
        let next = try CertificateFiles()
        defer { next.remove() }
        let (certificate, key) = try next.authority.issue(hosts: ["127.0.0.1"])
        try certificate.write(toFile: serverFiles.certificate, atomically: true, encoding: .utf8)
        try key.write(toFile: serverFiles.key, atomically: true, encoding: .utf8)
        try tls.reload()

        try await roundTrip(open, "reload/b")  // the open connection is not dropped
        let refused = await failure { _ = try await h.client(tls: old) }
        #expect(refused?.contains("not trusted") == true, "\(refused ?? "connected with the old authority")")
        let fresh = try await h.client(tls: try ClientTLS(authority: next.caPath))
        try await roundTrip(fresh, "reload/c")

        // A broken file is refused by the reload, and the certificate in use stays.
        try "not a certificate".write(toFile: serverFiles.certificate, atomically: true, encoding: .utf8)
        #expect(throws: EddyError.self) { try tls.reload() }
        let still = try await h.client(tls: try ClientTLS(authority: next.caPath))
        await still.close()
        await fresh.close()
        await open.close()
        await h.shutdown()
    }

    @Test("a connection that opens TLS and never finishes the handshake is closed at the frame timeout")
    func stalledHandshake() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        var limits = ConnectionLimits()
        limits.frameTimeout = .seconds(1)
        let h = try await Harness(tls: try ServerTLS(files: try files.write("server")), limits: limits)
        let port = h.server.port
        let closed = try await offPool { () -> Bool in
            let raw = try RawConnection(port: port)
            raw.send([0x16, 0x03, 0x01])  // the first bytes of a ClientHello, then nothing
            return raw.receive() == nil  // the server closes (receive times out after 5 s otherwise)
        }
        #expect(closed)
        await h.shutdown()
    }

    @Test("missing and broken files are refused at start with the file's name")
    func badFiles() throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let good = try files.write("server")
        let cases: [(ServerTLSFiles, String)] = [
            (ServerTLSFiles(certificate: files.folder + "/nope.pem", key: good.key), "nope.pem"),
            (ServerTLSFiles(certificate: good.certificate, key: files.caPath), files.caPath),
            (ServerTLSFiles(certificate: good.certificate, key: try files.write("other").key), "does the key belong"),
            (ServerTLSFiles(certificate: good.certificate, key: good.key, mutual: true), "--tls-mutual needs --tls-ca"),
        ]
        for (bad, expected) in cases {
            #expect {
                try ServerTLS(files: bad)
            } throws: { error in
                (error as? EddyError)?.message.contains(expected) == true
            }
        }
    }
}
