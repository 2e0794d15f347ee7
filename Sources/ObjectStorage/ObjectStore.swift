import NIOCore

/// ObjectStore is what Eddy needs of object storage: whole-object puts (optionally create-only), whole or
/// ranged gets, head, ordered listing and delete. Two backends implement it: ``FileObjectStore`` (a folder,
/// the embedded default) and ``S3ObjectStore`` (any S3-compatible server). Both pass one contract suite.
///
/// Keys are `/`-separated paths of printable characters (see ``ObjectKey``). Keys that must list in order are
/// fixed width and fixed depth (zero-padded numbers): some S3 servers list in an order that is not byte order
/// across `/`, `-` and `.`, so callers never rely on `startAfter` across prefixes of different depth.
///
/// Every method throws ``ObjectStoreError`` and nothing else.
public protocol ObjectStore: Sendable {
    /// What this backend can do and how it orders listings.
    var capabilities: ObjectStoreCapabilities { get }

    /// A short description for logs and errors (`file:///data/objects`, `s3://bucket` at an endpoint).
    var location: String { get }

    /// Stores `body` under `key`, whole and atomically: a reader sees the old object or the new one.
    /// - Parameters:
    ///   - key: the object's key.
    ///   - body: the bytes; sent with `Content-Length` and a checksum the server verifies.
    ///   - mode: `.overwrite` replaces what is there; `.createOnly` fails with ``ObjectStoreError/alreadyExists(_:)``
    ///     when the key holds different bytes, and succeeds with ``PutOutcome/alreadyPresent`` when it holds the
    ///     same bytes (an earlier attempt of the same idempotent write).
    /// - Returns: what happened.
    func put(_ key: String, body: ByteBuffer, mode: PutMode) async throws -> PutOutcome

    /// Returns the object's bytes, or those in `range` (clipped to the object's end).
    /// - Throws: ``ObjectStoreError/notFound(_:)``; ``ObjectStoreError/invalidRange(_:_:)`` when the range
    ///   starts at or past the end of a non-empty object.
    func get(_ key: String, range: Range<Int64>?) async throws -> ByteBuffer

    /// Returns the object's size and checksum, or nil when there is no such object.
    func head(_ key: String) async throws -> ObjectInfo?

    /// Lists keys under `prefix` in key order, at most `limit` of them (the server may return fewer).
    /// - Parameters:
    ///   - prefix: keys that start with it (no delimiter: every depth).
    ///   - startAfter: only keys after it; use it only within one fixed-depth prefix.
    ///   - continuation: the ``ObjectListing/continuation`` of the page before.
    ///   - limit: the page size, 1 to 1000.
    func list(prefix: String, startAfter: String?, continuation: String?, limit: Int) async throws -> ObjectListing

    /// Deletes the object; deleting a missing key succeeds (as on S3).
    func delete(_ key: String) async throws
}

extension ObjectStore {
    /// Returns the whole object.
    public func get(_ key: String) async throws -> ByteBuffer { try await get(key, range: nil) }

    /// Every key under `prefix` (and after `startAfter`), in key order, page by page.
    public func listAll(prefix: String, startAfter: String? = nil, pageSize: Int = 1000) async throws -> [ObjectInfo] {
        var result: [ObjectInfo] = []
        var continuation: String? = nil
        repeat {
            let page = try await list(
                prefix: prefix, startAfter: continuation == nil ? startAfter : nil, continuation: continuation,
                limit: pageSize)
            result += page.objects
            continuation = page.continuation
        } while continuation != nil
        return result
    }
}

/// How ``ObjectStore/put(_:body:mode:)`` treats a key that exists.
public enum PutMode: Sendable, Hashable {
    /// Replace the object.
    case overwrite
    /// Create the object only if the key is free (S3's `If-None-Match: *`).
    case createOnly
}

/// What a put did.
public enum PutOutcome: Sendable, Hashable {
    /// The object was written (new, or replacing another under `.overwrite`).
    case written
    /// Create-only found the same bytes already there: an earlier attempt wrote them. Counts as success.
    case alreadyPresent
}

/// What a backend can do. Callers check these instead of the backend's type.
public struct ObjectStoreCapabilities: Sendable, Hashable {
    /// `createOnly` puts are atomic: of concurrent creators of one key, exactly one writes.
    public var conditionalCreate: Bool
    /// `get(_:range:)` reads only the range (not the whole object and a slice).
    public var rangedReads: Bool
    /// Listings are in byte order of the whole key, across `/`, `-` and `.` too. When false, only keys of
    /// one fixed-width, fixed-depth layout are guaranteed to list in order.
    public var byteOrderListing: Bool
    /// A key may be both an object and the prefix of other keys followed by `/` (`a/b` and `a/b/c`).
    public var keysNestUnderObjects: Bool

    /// Creates a capability set.
    public init(conditionalCreate: Bool, rangedReads: Bool, byteOrderListing: Bool, keysNestUnderObjects: Bool) {
        self.conditionalCreate = conditionalCreate
        self.rangedReads = rangedReads
        self.byteOrderListing = byteOrderListing
        self.keysNestUnderObjects = keysNestUnderObjects
    }
}

/// One object's metadata.
public struct ObjectInfo: Sendable, Hashable {
    /// The object's key.
    public var key: String
    /// Its size in bytes.
    public var size: Int64
    /// The SHA-256 of its bytes (lowercase hex) where the backend knows it: Eddy stores it with every object it
    /// writes (S3 user metadata `x-amz-meta-eddy-sha256`); nil for objects written by others, and in listings.
    public var sha256: String?
    /// The server's entity tag without quotes (S3: the MD5 of a single-part upload), where there is one.
    public var etag: String?

    /// Creates an object description.
    public init(key: String, size: Int64, sha256: String? = nil, etag: String? = nil) {
        self.key = key
        self.size = size
        self.sha256 = sha256
        self.etag = etag
    }
}

/// One page of a listing.
public struct ObjectListing: Sendable, Hashable {
    /// The objects of this page, in key order.
    public var objects: [ObjectInfo]
    /// Pass it back to ``ObjectStore/list(prefix:startAfter:continuation:limit:)`` for the next page; nil at
    /// the end.
    public var continuation: String?

    /// Creates a page.
    public init(objects: [ObjectInfo], continuation: String?) {
        self.objects = objects
        self.continuation = continuation
    }
}
