import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// FileObjectStore keeps objects as files under a folder: key `a/b/c` is the file `ROOT/a/b/c`. It is the
/// embedded default's object store (`file://DATA/objects`) and the reference the S3 backend is tested against.
///
/// Puts are atomic and durable: the bytes go to a temporary file under `ROOT/.eddy-tmp/`, which is fsynced and
/// then renamed (overwrite) or hard-linked (create-only: `link` fails if the name exists, so of concurrent
/// creators exactly one wins) into place, and the folder is fsynced. A crash leaves the old object or the new
/// one, never a torn one; leftover temporary files are removed when the store is opened.
///
/// Limits: a key cannot also be a folder of other keys (`a/b` and `a/b/c`): such a put fails with
/// ``ObjectStoreError/invalidKey(_:_:)``. The first segment `.eddy-tmp` is reserved. Blocking file calls run on
/// a NIO thread pool, never on the caller's thread.
public final class FileObjectStore: ObjectStore {
    /// The folder holding the objects.
    public let root: String
    let pool: NIOThreadPool
    static let temporaryFolder = ".eddy-tmp"

    public var capabilities: ObjectStoreCapabilities {
        ObjectStoreCapabilities(
            conditionalCreate: true, rangedReads: true, byteOrderListing: true, keysNestUnderObjects: false)
    }

    public var location: String { "file://" + root }

    /// Opens (creating if needed) the store at `root` and removes temporary files a crash left behind.
    /// - Parameters:
    ///   - root: the folder; created with its parents.
    ///   - threadPool: where blocking file calls run.
    /// - Throws: ``ObjectStoreError/io(_:)`` when the folder cannot be created or read.
    public init(root: String, threadPool: NIOThreadPool = .singleton) throws {
        var trimmed = root
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.root = trimmed
        self.pool = threadPool
        try Self.makeFolders(trimmed + "/" + Self.temporaryFolder)
        let temporary = trimmed + "/" + Self.temporaryFolder
        for name in try Self.entries(of: temporary) { unlink(temporary + "/" + name.name) }
    }

    public func put(_ key: String, body: ByteBuffer, mode: PutMode) async throws -> PutOutcome {
        try validate(key)
        return try await pool.runIfActive { [root] in
            try Self.put(root: root, key: key, body: body, mode: mode)
        }
    }

    public func get(_ key: String, range: Range<Int64>?) async throws -> ByteBuffer {
        try validate(key)
        return try await pool.runIfActive { [root] in
            try Self.read(path: root + "/" + key, key: key, range: range)
        }
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        try validate(key)
        return try await pool.runIfActive { [root] in
            var info = stat()
            if stat(root + "/" + key, &info) != 0 {
                if errno == ENOENT || errno == ENOTDIR { return nil }
                throw Self.ioError("stat", root + "/" + key)
            }
            if (info.st_mode & S_IFMT) != S_IFREG { return nil }
            return ObjectInfo(key: key, size: Int64(info.st_size))
        }
    }

    public func list(prefix: String, startAfter: String?, continuation: String?, limit: Int) async throws
        -> ObjectListing
    {
        try ObjectKey.validatePrefix(prefix)
        guard (1...1000).contains(limit) else {
            throw ObjectStoreError.invalidKey(prefix, "list limit \(limit) is not in 1...1000")
        }
        let after = [continuation, startAfter].compactMap { $0 }.map { Array($0.utf8) }.max {
            $0.lexicographicallyPrecedes($1)
        }
        return try await pool.runIfActive { [root] in
            var walk = ListingWalk(root: root, prefix: Array(prefix.utf8), after: after, wanted: limit + 1)
            try walk.visit(folder: "", keyPrefix: [])
            var objects = walk.found
            var next: String? = nil
            if objects.count > limit {
                objects.removeLast(objects.count - limit)
                next = objects.last?.key
            }
            return ObjectListing(objects: objects, continuation: next)
        }
    }

    public func delete(_ key: String) async throws {
        try validate(key)
        try await pool.runIfActive { [root] in
            let path = root + "/" + key
            if unlink(path) != 0 {
                if errno == ENOENT || errno == ENOTDIR || errno == EISDIR { return }
                throw Self.ioError("unlink", path)
            }
            // Remove folders the delete left empty (best effort; a concurrent put recreates what it needs).
            var folder = Self.parent(of: path)
            while folder.count > root.count && rmdir(folder) == 0 { folder = Self.parent(of: folder) }
            Self.syncFolder(folder)
        }
    }

    func validate(_ key: String) throws {
        try ObjectKey.validate(key)
        if key == Self.temporaryFolder || key.hasPrefix(Self.temporaryFolder + "/") {
            throw ObjectStoreError.invalidKey(key, "'\(Self.temporaryFolder)' is reserved by the file backend")
        }
    }

    // MARK: - Blocking work (thread pool)

    static func put(root: String, key: String, body: ByteBuffer, mode: PutMode) throws -> PutOutcome {
        let temporary = root + "/" + temporaryFolder + "/" + randomName()
        try writeDurably(path: temporary, body: body)
        defer { unlink(temporary) }
        let path = root + "/" + key
        let folder = parent(of: path)
        // A concurrent delete may remove a folder between our mkdir and the link: try again a few times.
        for attempt in 0..<4 {
            try makeFolders(folder, key: key)
            let done: Int32 = mode == .overwrite ? rename(temporary, path) : link(temporary, path)
            if done == 0 {
                syncFolder(folder)
                return .written
            }
            switch errno {
            case ENOENT where attempt < 3: continue
            case EEXIST:
                let existing = try read(path: path, key: key, range: nil)
                if existing == body { return .alreadyPresent }
                throw ObjectStoreError.alreadyExists(key)
            case EISDIR, ENOTDIR, EPERM:
                throw ObjectStoreError.invalidKey(key, "a folder of other keys has this name, or a key is a folder")
            default: throw ioError(mode == .overwrite ? "rename" : "link", path)
            }
        }
        throw ioError("link", path)
    }

    static func writeDurably(path: String, body: ByteBuffer) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw ioError("open", path) }
        defer { close(fd) }
        try body.withUnsafeReadableBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("write", path)
                }
                done += n
            }
        }
        if fsync(fd) != 0 { throw ioError("fsync", path) }
    }

    static func read(path: String, key: String, range: Range<Int64>?) throws -> ByteBuffer {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT || errno == ENOTDIR || errno == EISDIR { throw ObjectStoreError.notFound(key) }
            throw ioError("open", path)
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw ioError("fstat", path) }
        if (info.st_mode & S_IFMT) != S_IFREG { throw ObjectStoreError.notFound(key) }
        let size = Int64(info.st_size)
        var start: Int64 = 0
        var end = size
        if let range {
            if range.isEmpty { return ByteBuffer() }
            if range.lowerBound >= size { throw ObjectStoreError.invalidRange(key, size) }
            start = range.lowerBound
            end = min(range.upperBound, size)
        }
        let count = Int(end - start)
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { bytes in
            var done = 0
            while done < count {
                let n = pread(fd, bytes.baseAddress! + done, count - done, off_t(start) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ioError("pread", path)
                }
                if n == 0 { throw ObjectStoreError.io("\(path) shrank while being read") }
                done += n
            }
            return count
        }
        return buffer
    }

    /// Creates `folder` and its missing parents, fsyncing each parent that gained an entry.
    static func makeFolders(_ folder: String, key: String? = nil) throws {
        if mkdir(folder, 0o755) == 0 {
            syncFolder(parent(of: folder))
            return
        }
        switch errno {
        case EEXIST:
            var info = stat()
            if stat(folder, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR { return }
            if let key { throw ObjectStoreError.invalidKey(key, "an object has the name of one of its folders") }
            throw ObjectStoreError.io("\(folder) exists and is not a folder")
        case ENOENT:
            try makeFolders(parent(of: folder), key: key)
            try makeFolders(folder, key: key)
        case ENOTDIR:
            if let key { throw ObjectStoreError.invalidKey(key, "an object has the name of one of its folders") }
            throw ioError("mkdir", folder)
        default: throw ioError("mkdir", folder)
        }
    }

    static func syncFolder(_ folder: String) {
        let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func randomName() -> String {
        (0..<4).map { _ in String(UInt32.random(in: 0...UInt32.max), radix: 16) }.joined(separator: "-")
    }

    static func ioError(_ operation: String, _ path: String) -> ObjectStoreError {
        .io("\(operation) \(path): \(String(cString: strerror(errno)))")
    }

    struct Entry {
        var name: String
        var isFolder: Bool
    }

    /// The entries of a folder (without `.` and `..`); an absent folder has none.
    static func entries(of folder: String) throws -> [Entry] {
        guard let handle = opendir(folder) else {
            if errno == ENOENT || errno == ENOTDIR { return [] }
            throw ioError("opendir", folder)
        }
        defer { closedir(handle) }
        var result: [Entry] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var isFolder = entry.pointee.d_type == UInt8(DT_DIR)
            if entry.pointee.d_type == UInt8(DT_UNKNOWN) {
                var info = stat()
                isFolder = lstat(folder + "/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
            }
            result.append(Entry(name: name, isFolder: isFolder))
        }
        return result
    }
}

/// A depth-first walk of the store's folders in byte order of the keys, pruned by the prefix and the
/// start-after key, that stops once it has found what a page needs. A folder `d` sorts as `d/`, which puts every
/// key under it where byte order of whole keys wants it (`a-b` < `a.c` < `a/x` < `a0`).
struct ListingWalk {
    let root: String
    let prefix: [UInt8]
    let after: [UInt8]?
    let wanted: Int
    var found: [ObjectInfo] = []

    init(root: String, prefix: [UInt8], after: [UInt8]?, wanted: Int) {
        self.root = root
        self.prefix = prefix
        self.after = after
        self.wanted = wanted
    }

    mutating func visit(folder: String, keyPrefix: [UInt8]) throws {
        let path = folder.isEmpty ? root : root + "/" + folder
        var children = try FileObjectStore.entries(of: path).map { entry in
            (entry, keyPrefix + Array(entry.name.utf8) + (entry.isFolder ? [UInt8(ascii: "/")] : []))
        }
        children.sort { $0.1.lexicographicallyPrecedes($1.1) }
        for (entry, key) in children {
            if found.count >= wanted { return }
            if folder.isEmpty && entry.name == FileObjectStore.temporaryFolder { continue }
            if entry.isFolder {
                // Descend only where the prefix can match and some key may come after `after`.
                guard key.starts(with: prefix) || prefix.starts(with: key) else { continue }
                if let after, !after.starts(with: key), after.lexicographicallyPrecedes(key) == false { continue }
                try visit(folder: folder.isEmpty ? entry.name : folder + "/" + entry.name, keyPrefix: key)
            } else {
                guard key.starts(with: prefix) else { continue }
                if let after, !after.lexicographicallyPrecedes(key) { continue }
                var info = stat()
                let file = root + "/" + String(decoding: key, as: UTF8.self)
                guard stat(file, &info) == 0 else { continue }  // deleted meanwhile
                found.append(ObjectInfo(key: String(decoding: key, as: UTF8.self), size: Int64(info.st_size)))
            }
        }
    }
}
