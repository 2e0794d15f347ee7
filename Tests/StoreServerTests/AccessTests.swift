import EddyAuth
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import StoreServer
import StreamModel
import Testing
import WireProtocol

/// Tokens and per-scope roles on a real store server: every request type against every kind of principal.
@Suite("access control on the store", .serialized)
struct StoreAccessTests {
    /// The tokens of the table: a role each on tenant-a, everything on tenant-b, and the service identity.
    static let tokens = """
        {"tokens": [
          {"token": "t-reader", "principal": "reader", "grants": [{"scope": "tenant-a/*", "roles": ["read"]}]},
          {"token": "t-writer", "principal": "writer", "grants": [{"scope": "tenant-a/*", "roles": ["write"]}]},
          {"token": "t-admin", "principal": "admin-a", "grants": [{"scope": "tenant-a/*", "roles": ["admin"]}]},
          {"token": "t-other", "principal": "other", "grants": [{"scope": "tenant-b/*", "roles": ["read", "write", "admin"]}]},
          {"token": "t-root", "principal": "service", "grants": [{"scope": "*", "roles": ["admin"]}]}
        ]}
        """

    static func access() throws -> AccessControl {
        AccessControl(
            setting: .tokens(path: "(test)"),
            authenticator: try TokensFile(json: Data(tokens.utf8), source: "(test)"))
    }

    /// One row per request type: the request on stream `s` (fresh, one event in segment 0), and the roles on
    /// tenant-a that allow it (this table is the test's own, written from docs/security.md, not the code's).
    static func rows(_ s: StreamName, fresh: StreamName) throws -> [(String, Request, Set<String>)] {
        let segment = SegmentID(stream: s, number: 0)
        let all: Set<String> = ["reader", "writer", "admin-a", "service"]
        let writers: Set<String> = ["writer", "admin-a", "service"]
        let admins: Set<String> = ["admin-a", "service"]
        return [
            ("create", .createStream(fresh, segments: 1), admins),
            ("info", .streamInfo(s), all),
            ("segment info", .segmentInfo(segment), all),
            (
                "read", .read(segment: segment, offset: 0, maxBytes: 100, waitMilliseconds: 0),
                all.subtracting(["writer"])
            ),
            ("writer state", .writerState(segment, writerID: "w"), writers),
            (
                "append",
                .append(segment: segment, writerID: "", firstEventNumber: 0, frames: try frames(["x"])), writers
            ),
            ("seal", .seal(segment), writers),
            ("truncate", .truncate(segment, offset: 0), admins),
            ("delete", .deleteStream(s), admins),
            ("stats", .stats, ["service"]),
        ]
    }

    @Test("every request type and role: allowed exactly where a grant says so, else forbidden; other tenants never")
    func table() async throws {
        let h = try await Harness(access: try Self.access())
        let root = try await h.client(token: "t-root")
        var checked = 0
        for (principal, token) in [
            ("reader", "t-reader"), ("writer", "t-writer"), ("admin-a", "t-admin"), ("other", "t-other"),
            ("service", "t-root"),
        ] {
            let client = try await h.client(token: token)
            for (i, name) in try Self.rows(
                try StreamName(parsing: "tenant-a/x"), fresh: try StreamName(parsing: "tenant-a/x")
            ).map(\.0).enumerated() {
                // A fresh stream for each row, so a delete or a seal does not change what the next row meets.
                let s = try StreamName(scope: "tenant-a", stream: "s-\(principal)-\(i)")
                try await root.createStream(s, segments: 1)
                _ = try await root.append(
                    SegmentID(stream: s, number: 0), frames: try frames(["e"]), writerID: "", firstEventNumber: 0)
                let row = try Self.rows(s, fresh: try StreamName(scope: "tenant-a", stream: "new-\(principal)-\(i)"))[i]
                #expect(row.0 == name)
                let allowed = row.2.contains(principal)
                do {
                    _ = try await client.send(row.1, timeout: .seconds(10))
                    #expect(allowed, "\(principal) \(name) was answered")
                } catch {
                    if allowed {
                        Issue.record("\(principal) \(name) was refused: \(error)")
                    } else {
                        #expect(error.code == .forbidden, "\(principal) \(name): \(error)")
                        #expect(error.message.contains(principal), "the refusal names who asked: \(error.message)")
                    }
                }
                checked += 1
            }
            await client.close()
        }
        #expect(checked == 50)
        await root.close()
        await h.shutdown()
    }

    @Test("a listing shows each principal only its tenant's streams")
    func listings() async throws {
        let h = try await Harness(access: try Self.access())
        let root = try await h.client(token: "t-root")
        for name in ["tenant-a/one", "tenant-a/two", "tenant-b/three", "tenant-c/four"] {
            try await root.createStream(try StreamName(parsing: name), segments: 1)
        }
        for (token, expected) in [
            ("t-reader", ["tenant-a/one", "tenant-a/two"]), ("t-writer", ["tenant-a/one", "tenant-a/two"]),
            ("t-other", ["tenant-b/three"]),
            ("t-root", ["tenant-a/one", "tenant-a/two", "tenant-b/three", "tenant-c/four"]),
        ] {
            let c = try await h.client(token: token)
            #expect(try await c.listStreams().map(\.name.description).sorted() == expected, "\(token)")
            await c.close()
        }
        await root.close()
        await h.shutdown()
    }

    @Test("no token or an unknown one: the hello is refused as unauthorized and the connection closed")
    func unauthorized() async throws {
        let h = try await Harness(access: try Self.access())
        for token in ["", "t-nobody"] {
            do {
                let c = try await h.client(token: token)
                await c.close()
                Issue.record("a hello with token '\(token)' was accepted")
            } catch {
                #expect((error as? EddyError)?.code == .unauthorized, "\(error)")
            }
        }
        // The server goes on serving the others.
        let c = try await h.client(token: "t-reader")
        #expect(try await c.listStreams().isEmpty)
        await c.close()
        await h.shutdown()
    }

    @Test("with authentication off every connection may do everything, with or without a token")
    func off() async throws {
        let h = try await Harness()
        let c = try await h.client(token: "anything")
        try await c.createStream(try StreamName(parsing: "tenant-a/x"), segments: 1)
        #expect(try await c.listStreams().count == 1)
        await c.close()
        await h.shutdown()
    }

    @Test("tokens files: patterns, roles, and clear errors for bad files")
    func tokensFiles() throws {
        let file = try TokensFile(json: Data(Self.tokens.utf8), source: "t.json")
        let reader = try file.principal(for: "t-reader")
        #expect(reader.name == "reader")
        #expect(reader.may(.read, on: try StreamName(parsing: "tenant-a/orders")))
        #expect(!reader.may(.write, on: try StreamName(parsing: "tenant-a/orders")))
        #expect(!reader.may(.read, on: try StreamName(parsing: "tenant-ab/orders")), "tenant-a/* is not tenant-ab")
        #expect(try file.principal(for: "t-admin").may(.write, on: try StreamName(parsing: "tenant-a/x")))
        #expect(throws: EddyError.self) { try file.principal(for: "t-read") }
        #expect(Grant(scope: "*", roles: [.read]).names("a/b"))
        #expect(Grant(scope: "a/*-logs", roles: [.read]).names("a/app-logs"))
        #expect(!Grant(scope: "a/*-logs", roles: [.read]).names("a/app-log"))
        #expect(Grant(scope: "a/x", roles: [.read]).names("a/x") && !Grant(scope: "a/x", roles: [.read]).names("a/xy"))
        for (bad, says) in [
            ("{}", "missing \"tokens\""),
            ("{\"tokens\": [{\"token\": \"\", \"principal\": \"p\", \"grants\": []}]}", "empty"),
            (
                "{\"tokens\": [{\"token\": \"a\", \"principal\": \"p\", \"grants\": [{\"scope\": \"*\", \"roles\": [\"owner\"]}]}]}",
                "roles"
            ),
            (
                "{\"tokens\": [{\"token\": \"a\", \"principal\": \"p\", \"grants\": []}, {\"token\": \"a\", \"principal\": \"q\", \"grants\": []}]}",
                "repeats"
            ),
            ("not json", "not valid"),
        ] {
            do {
                _ = try TokensFile(json: Data(bad.utf8), source: "bad.json")
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.code == .invalidArgument && error.message.contains("bad.json"), "\(error)")
                #expect(error.message.contains(says), "\(bad): \(error.message)")
            }
        }
        #expect(throws: EddyError.self) { try AuthSetting(parsing: "tokens:") }
        #expect(try AuthSetting(parsing: "tokens:/x.json") == .tokens(path: "/x.json"))
    }

    @Test("bytes served count against a tenant's byte rate: after a large read its next requests wait")
    func readBytesAreCharged() async throws {
        let h = try await Harness(access: try Self.access(), rates: TenantRates(bytesPerSecond: 20_000))
        let root = try await h.client(token: "t-root")
        let name = try StreamName(parsing: "tenant-a/read-rate")
        try await root.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        let payload = [UInt8](repeating: 0x61, count: 1000)
        let batch = try (0..<200).flatMap { _ in try EventFrame.encode(Event(timestamp: 1, payload: payload)) }
        _ = try await root.send(
            .append(segment: segment, writerID: "", firstEventNumber: 0, frames: ByteBuffer(bytes: batch)))
        let reader = try await h.client(token: "t-reader")
        // 200 KB read with 20 KB a second: the bucket owes about 9 seconds, so the next request is refused.
        let read = try await reader.send(.read(segment: segment, offset: 0, maxBytes: 1 << 20, waitMilliseconds: 0))
        guard case .readResult(_, _, let data) = read else {
            Issue.record("no read result: \(read)")
            return
        }
        #expect(data.readableBytes > 150_000)
        do {
            _ = try await reader.send(.streamInfo(name))
            Issue.record("a tenant that was just served 10 seconds of bytes was served again at once")
        } catch {
            #expect(error.code == .overloaded && error.message.contains("bytes a second"), "\(error)")
        }
        // Its service identity is never limited, nor is another tenant.
        _ = try await root.send(.read(segment: segment, offset: 0, maxBytes: 1 << 20, waitMilliseconds: 0))
        _ = try await root.send(.streamInfo(name))
        await h.shutdown()
    }

    @Test("per-principal rates: a tenant over its requests or bytes a second is refused overloaded; others are not")
    func rates() async throws {
        let h = try await Harness(
            access: try Self.access(), rates: TenantRates(requestsPerSecond: 5, bytesPerSecond: 10_000))
        let root = try await h.client(token: "t-root")
        let name = try StreamName(parsing: "tenant-a/rated")
        try await root.createStream(name, segments: 1)
        // The service identity (admin on *) is never limited.
        for _ in 0..<60 { _ = try await root.send(.streamInfo(name)) }
        let reader = try await h.client(token: "t-reader")
        var served = 0
        var refused: EddyError?
        let started = ContinuousClock.now
        for _ in 0..<30 {
            do {
                _ = try await reader.send(.streamInfo(name))
                served += 1
            } catch {
                refused = error
            }
        }
        // A burst of 5, then 5 a second however long the 30 requests took (a busy machine takes longer).
        let took = (ContinuousClock.now - started).inSeconds
        #expect(served >= 5 && Double(served) <= 6 + 5 * took, "served \(served) of 30 in \(took) s at 5 a second")
        if took < 4 {
            #expect(refused?.code == .overloaded && refused?.message.contains("reader is over its 5 requests") == true)
        }
        // Another tenant's principal has buckets of its own.
        let bob = try await h.client(token: "t-other")
        _ = try await bob.send(.listStreams)
        await bob.close()
        // Bytes: a writer's appends of 8 KB at 10 KB a second.
        let writer = try await h.client(token: "t-writer")
        let big = try frames([String(repeating: "x", count: 8_000)])
        var appended = 0
        var overBytes: EddyError?
        let appending = ContinuousClock.now
        for _ in 0..<5 {
            do {
                _ = try await writer.append(
                    SegmentID(stream: name, number: 0), frames: big, writerID: "", firstEventNumber: 0)
                appended += 1
            } catch {
                overBytes = error
            }
        }
        let tookBytes = (ContinuousClock.now - appending).inSeconds
        #expect(
            appended >= 1 && Double(appended) <= 2 + 10_000 * tookBytes / 8_000,
            "appended \(appended) of 5 8 KB batches in \(tookBytes) s at 10 KB a second")
        if tookBytes < 2 {
            #expect(overBytes?.message.contains("bytes a second") == true, "\(String(describing: overBytes))")
        }
        // A second later the reader is served again.
        try await Task.sleep(for: .milliseconds(1100))
        _ = try await reader.send(.streamInfo(name))
        await reader.close()
        await writer.close()
        await root.close()
        await h.shutdown()
    }
}
