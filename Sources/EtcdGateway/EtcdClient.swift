import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import StreamModel

/// EtcdClient speaks etcd's v3 JSON gateway (grpc-gateway) over HTTP: every call is a POST of a JSON body to
/// `/v3/...`, keys and values are standard base64, int64 fields travel as strings and fields at their zero value
/// are left out. It is what a node needs for membership: leases with keep-alive, puts under a lease, a ranged read
/// of a prefix, and a watch of that prefix. No consensus is made here: etcd is the authority.
public final class EtcdClient: Sendable {
    /// One key and its value.
    public struct KeyValue: Sendable, Hashable {
        public var key: String
        public var value: [UInt8]
        /// The revision of the key's last change.
        public var modRevision: Int64

        /// Creates a key and value.
        public init(key: String, value: [UInt8], modRevision: Int64) {
            self.key = key
            self.value = value
            self.modRevision = modRevision
        }
    }

    /// What a watch reports.
    public enum WatchEvent: Sendable, Hashable {
        /// The watch is set up; changes after `revision` follow.
        case created(revision: Int64)
        /// A key was written.
        case put(KeyValue)
        /// A key was deleted (or its lease lapsed) at `revision`.
        case delete(key: String, revision: Int64)
    }

    /// The gateway's base URL, `http://HOST:PORT`.
    public let endpoint: String
    private let http: HTTPClient
    private let timeout: TimeAmount

    /// A client of the etcd at `endpoint` (`http://127.0.0.1:2379`).
    public init(endpoint: String, http: HTTPClient = .shared, timeout: Duration = .seconds(5)) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.http = http
        self.timeout = TimeAmount(timeout)
    }

    /// Grants a lease of `ttl` seconds (etcd's minimum is 2) and returns its ID.
    /// - Throws: ``EddyError/Code/unavailable`` when etcd does not answer or refuses.
    public func grantLease(ttl: Int) async throws(EddyError) -> Int64 {
        let answer = try await call("/v3/lease/grant", ["TTL": "\(ttl)"])
        guard let id = Self.int64(answer["ID"]) else {
            throw EddyError(.unavailable, "etcd granted no lease: \(answer)")
        }
        return id
    }

    /// Renews a lease; returns its TTL in seconds, or nil when the lease is gone (it expired or was revoked: etcd
    /// answers without a TTL).
    public func keepAlive(lease: Int64) async throws(EddyError) -> Int? {
        let answer = try await call("/v3/lease/keepalive", ["ID": "\(lease)"])
        let result = answer["result"] as? [String: Any] ?? answer
        guard let ttl = Self.int64(result["TTL"]), ttl > 0 else { return nil }
        return Int(ttl)
    }

    /// Revokes a lease: every key under it is deleted at once.
    public func revoke(lease: Int64) async throws(EddyError) {
        _ = try await call("/v3/lease/revoke", ["ID": "\(lease)"])
    }

    /// Writes `value` at `key`, under `lease` when given; returns the new revision.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64? = nil) async throws(EddyError) -> Int64 {
        var body: [String: Any] = ["key": Self.base64(key), "value": Data(value).base64EncodedString()]
        if let lease { body["lease"] = "\(lease)" }
        return Self.revision(try await call("/v3/kv/put", body))
    }

    /// Deletes `key`; returns the new revision.
    @discardableResult
    public func delete(_ key: String) async throws(EddyError) -> Int64 {
        Self.revision(try await call("/v3/kv/deleterange", ["key": Self.base64(key)]))
    }

    /// Every key under `prefix`, in key order, and the store's revision when read.
    public func range(prefix: String) async throws(EddyError) -> (values: [KeyValue], revision: Int64) {
        let answer = try await call(
            "/v3/kv/range", ["key": Self.base64(prefix), "range_end": Self.prefixEnd(prefix)])
        let kvs = (answer["kvs"] as? [[String: Any]] ?? []).compactMap(Self.keyValue)
        return (kvs, Self.revision(answer))
    }

    /// Compacts the history up to `revision` (watches that start below it are cancelled).
    public func compact(revision: Int64) async throws(EddyError) {
        _ = try await call("/v3/kv/compaction", ["revision": "\(revision)", "physical": true])
    }

    /// Watches every key under `prefix` from `revision` (nil: from now). The stream ends with
    /// ``EddyError/Code/truncated`` when etcd cancels the watch because `revision` was compacted (re-read the
    /// range, then watch again from its revision + 1), and with ``EddyError/Code/unavailable`` when the
    /// connection to etcd ends.
    public func watch(prefix: String, from revision: Int64? = nil) -> AsyncThrowingStream<WatchEvent, any Error> {
        var create: [String: Any] = ["key": Self.base64(prefix), "range_end": Self.prefixEnd(prefix)]
        if let revision { create["start_revision"] = "\(revision)" }
        let request = self.request("/v3/watch", ["create_request": create])
        let http = self.http
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let response = try await http.execute(request, timeout: .hours(24 * 365))
                    guard response.status == .ok else {
                        throw EddyError(.unavailable, "etcd answered the watch with \(response.status.code)")
                    }
                    var pending: [UInt8] = []
                    for try await chunk in response.body {
                        pending += chunk.readableBytesView
                        while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = Array(pending[..<end])
                            pending.removeFirst(end + 1)
                            for event in try Self.watchEvents(line) { continuation.yield(event) }
                        }
                    }
                    if !pending.isEmpty { for event in try Self.watchEvents(pending) { continuation.yield(event) } }
                    throw EddyError(.unavailable, "etcd ended the watch of \(prefix)")
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    // MARK: - The gateway's JSON

    /// The gateway's request for `path`: a POST of `body` as JSON.
    private func request(_ path: String, _ body: [String: Any]) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: Self.encode(body)))
        return request
    }

    private func call(_ path: String, _ body: [String: Any]) async throws(EddyError) -> [String: Any] {
        let request = self.request(path, body)
        let text: String
        let status: HTTPResponseStatus
        do {
            let response = try await http.execute(request, timeout: timeout)
            status = response.status
            text = String(buffer: try await response.body.collect(upTo: 16 << 20))
        } catch {
            throw EddyError(.unavailable, "etcd at \(endpoint) did not answer \(path): \(error)")
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        guard status == .ok, let object else {
            let message =
                (object?["error"] as? String) ?? (object?["message"] as? String) ?? text.prefix(200).description
            throw EddyError(.unavailable, "etcd refused \(path) (\(status.code)): \(message)")
        }
        return object
    }

    static func watchEvents(_ line: [UInt8]) throws(EddyError) -> [WatchEvent] {
        guard !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) else { return [] }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
            throw EddyError(.malformedFrame, "etcd sent a watch line that is not JSON")
        }
        if let error = object["error"] as? [String: Any] {
            throw EddyError(.unavailable, "etcd watch error: \(error["message"] ?? error)")
        }
        guard let result = object["result"] as? [String: Any] else { return [] }
        let revision = revision(result)
        if result["canceled"] as? Bool == true {
            let compacted = int64(result["compact_revision"]) ?? 0
            throw EddyError(
                .truncated,
                "etcd cancelled the watch: revision compacted up to \(compacted)"
                    + ((result["cancel_reason"] as? String).map { " (\($0))" } ?? ""))
        }
        var events: [WatchEvent] = []
        if result["created"] as? Bool == true { events.append(.created(revision: revision)) }
        for e in result["events"] as? [[String: Any]] ?? [] {
            guard let kv = e["kv"] as? [String: Any], let parsed = keyValue(kv) else { continue }
            // A PUT event has no `type` (it is the zero value); DELETE says so.
            if e["type"] as? String == "DELETE" {
                events.append(.delete(key: parsed.key, revision: parsed.modRevision))
            } else {
                events.append(.put(parsed))
            }
        }
        return events
    }

    static func keyValue(_ kv: [String: Any]) -> KeyValue? {
        guard let key = (kv["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else { return nil }
        let value = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
        return KeyValue(
            key: String(decoding: key, as: UTF8.self), value: Array(value), modRevision: int64(kv["mod_revision"]) ?? 0)
    }

    static func revision(_ answer: [String: Any]) -> Int64 {
        int64((answer["header"] as? [String: Any])?["revision"]) ?? 0
    }

    static func int64(_ value: Any?) -> Int64? {
        if let s = value as? String { return Int64(s) }
        if let n = value as? NSNumber { return n.int64Value }
        return nil
    }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// The end of the range of keys that start with `prefix` (the prefix with its last byte plus one), base64.
    static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return Data(bytes).base64EncodedString()
            }
            bytes.removeLast()
        }
        return Data([0]).base64EncodedString()
    }

    static func encode(_ object: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}
