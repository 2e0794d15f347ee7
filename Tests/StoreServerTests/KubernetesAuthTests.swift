import EddyAuth
import EddyTestSupport
import Foundation
import StoreClient
import StreamModel
import Testing
import WireProtocol

/// `--auth k8s:FILE`: projected service-account tokens signed here (RS256 and ES256, as a cluster's issuer
/// would), the cluster's key set as a JWKS, and a real store that takes them in the hello.
@Suite("Kubernetes identities", .serialized)
struct KubernetesAuthTests {
    static func file(_ jwks: String, inline: Bool = true) -> String {
        """
        issuer: \(KubernetesTokenIssuer.issuer)
        audience: eddy
        \(inline ? "jwks: \(jwks.replacingOccurrences(of: "\n", with: " "))" : "jwks_file: cluster-jwks.json")
        grants:
          default:
            - {scope: "{namespace}/*", roles: [read, write]}
          accounts:
            "system:serviceaccount:ops:backup": [{scope: "*", roles: [read]}]
            "system:serviceaccount:ops:admin": [{scope: "*", roles: [admin]}]
        tokens:
          - {token: "node-secret", principal: eddy-node, grants: [{scope: "*", roles: [admin]}]}
        """
    }

    @Test("a service account's token gives its sub and its namespace's grants; named accounts get their own")
    func principals() async throws {
        let cluster = try KubernetesTokenIssuer()
        let auth = try await KubernetesAuthenticator.load(
            text: Self.file(try cluster.jwks), source: "k8s.yaml", folder: "/nonexistent")
        for kid in ["rsa-1", "ec-1"] {
            let web = try await auth.principal(
                for: try await cluster.token(namespace: "team-a", account: "web", kid: kid))
            #expect(web.name == "system:serviceaccount:team-a:web", "\(kid)")
            #expect(web.may(.write, on: try StreamName(parsing: "team-a/orders")))
            #expect(!web.may(.read, on: try StreamName(parsing: "team-b/orders")))
        }
        let node = try await auth.principal(for: "node-secret")
        #expect(node.name == "eddy-node" && node.isAdministrator, "the file's static token")
        let backup = try await auth.principal(for: try await cluster.token(namespace: "ops", account: "backup"))
        #expect(backup.may(.read, on: try StreamName(parsing: "team-b/orders")))
        #expect(
            !backup.may(.write, on: try StreamName(parsing: "ops/anything")), "the account's grants replace the default"
        )
    }

    @Test("expired, foreign, misdirected and inconsistent tokens are unauthorized")
    func refused() async throws {
        let cluster = try KubernetesTokenIssuer()
        let other = try KubernetesTokenIssuer()
        let auth = try await KubernetesAuthenticator.load(
            text: Self.file(try cluster.jwks), source: "k8s.yaml", folder: "/nonexistent")
        let refused: [(String, String)] = [
            ("expired", try await cluster.token(namespace: "a", account: "w", expires: -120)),
            ("another cluster's key", try await other.token(namespace: "a", account: "w")),
            ("another issuer", try await cluster.token(namespace: "a", account: "w", issuer: "https://other.cluster")),
            ("another audience", try await cluster.token(namespace: "a", account: "w", audience: "vault")),
            (
                "namespace disagrees with sub",
                try await cluster.token(namespace: "a", account: "w", claimedNamespace: "b")
            ),
            ("not a service account", try await cluster.token(namespace: "a", account: "w", subject: "alice")),
            ("not a JWT", "not.a.jwt"),
        ]
        await expectUnauthorized(auth, refused)
    }

    @Test("the example file of cluster/k8s/components/kubernetes-identities loads, and its static token is the nodes'")
    func clusterExample() async throws {
        let folder =
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/cluster/k8s/components/kubernetes-identities"
        let auth = try await KubernetesAuthenticator.load(path: folder + "/k8s-auth.yaml")
        let kustomization = try String(contentsOfFile: folder + "/kustomization.yaml", encoding: .utf8)
        let literal = try #require(
            kustomization.split(separator: "\n").first { $0.contains("service-token=") }?.split(separator: "=").last)
        let node = try await auth.principal(for: String(literal))
        #expect(node.name == "eddy-node" && node.isAdministrator)
    }

    @Test("bad files are refused at start, naming the file and the problem")
    func badFiles() async throws {
        let jwks = try KubernetesTokenIssuer().jwks.replacingOccurrences(of: "\n", with: " ")
        for (text, says) in [
            ("audience: eddy\njwks: \(jwks)", "not valid"),
            ("issuer: x\naudience: eddy", "jwks or jwks_file"),
            ("issuer: x\naudience: eddy\njwks: {\"keys\": []}", "no keys"),
            ("issuer: x\naudience: eddy\njwks_file: missing.json", "missing.json"),
            (
                "issuer: x\naudience: eddy\njwks: {\"keys\": [{\"kty\": \"oct\", \"kid\": \"h\", \"k\": \"AAAA\"}]}",
                "not valid"
            ),
            (
                "issuer: x\naudience: eddy\njwks: {\"keys\": [{\"kty\": \"RSA\", \"alg\": \"PS256\", \"kid\": \"p\"}]}",
                "RS256 or ES256"
            ),
            (
                "issuer: x\naudience: eddy\njwks: \(jwks)\ngrants: {accounts: {\"alice\": []}}",
                "system:serviceaccount:NAMESPACE:NAME"
            ),
            ("- just\n- a list", "not valid"),
            // A key that is not a plain string (Yams's own loader traps on it; found by the k8s-auth fuzzer).
            ("issuer: x\naudience: eddy\n[admin]: y", "not a plain string"),
            // A key set that is a device, not a file: refused, not read forever.
            ("issuer: x\naudience: eddy\njwks_file: /dev/zero", "not a regular file"),
        ] {
            do {
                _ = try await KubernetesAuthenticator.load(text: text, source: "k8s.yaml", folder: "/nonexistent")
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.code == .invalidArgument && error.message.contains("k8s.yaml"), "\(error)")
                #expect(error.message.contains(says), "\(text): \(error.message)")
            }
        }
    }

    @Test("a store with --auth k8s:FILE (jwks_file beside it) takes the pods' tokens; a reload takes a new key set")
    func store() async throws {
        let folder = NSTemporaryDirectory() + "eddy-k8s-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cluster = try KubernetesTokenIssuer()
        try Self.file(try cluster.jwks, inline: false).write(
            toFile: folder + "/k8s.yaml", atomically: true, encoding: .utf8)
        try cluster.jwks.write(toFile: folder + "/cluster-jwks.json", atomically: true, encoding: .utf8)
        let setting = try AuthSetting(parsing: "k8s:\(folder)/k8s.yaml")
        #expect(setting == .kubernetes(path: "\(folder)/k8s.yaml") && setting.description == "k8s:\(folder)/k8s.yaml")
        let access = try await AccessControl.load(setting)
        let h = try await Harness(access: access)
        let admin = try await h.client(token: try await cluster.token(namespace: "ops", account: "admin"))
        let name = try StreamName(parsing: "team-a/orders")
        try await admin.createStream(name, segments: 1)
        try await admin.createStream(try StreamName(parsing: "team-b/orders"), segments: 1)
        await admin.close()
        let web = try await h.client(token: try await cluster.token(namespace: "team-a", account: "web"))
        #expect(try await web.listStreams().map(\.name) == [name])
        await #expect(throws: EddyError.self) { try await web.info(try StreamName(parsing: "team-b/orders")) }
        await web.close()

        // The cluster rotates its keys: after the reload (SIGHUP) tokens of the new key work, the old key's do not.
        let rotated = try KubernetesTokenIssuer()
        try rotated.jwks.write(toFile: folder + "/cluster-jwks.json", atomically: true, encoding: .utf8)
        try await access.reload()
        let fresh = try await h.client(token: try await rotated.token(namespace: "team-a", account: "web"))
        #expect(try await fresh.info(name).segments.count == 1)
        await fresh.close()
        do {
            let stale = try await h.client(token: try await cluster.token(namespace: "team-a", account: "web"))
            await stale.close()
            Issue.record("a token of the retired key was taken")
        } catch let error as EddyError {
            #expect(error.code == .unauthorized, "\(error)")
        }
        await h.shutdown()
    }
}
