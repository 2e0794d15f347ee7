import StreamModel

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Thin wrappers over POSIX file calls that turn errno into ``EddyError`` messages naming the path.
enum FileSystem {
    static func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    static func ioError(_ what: String, _ path: String, _ code: Int32 = errno) -> EddyError {
        EddyError(.ioError, "\(what) \(path): \(errnoText(code))")
    }

    /// Creates `path` and its parents, like `mkdir -p`.
    static func makeDirectories(_ path: String) throws(EddyError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw ioError("cannot create directory", current)
            }
        }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Opens a file; `create` makes it if missing.
    static func open(_ path: String, create: Bool) throws(EddyError) -> Int32 {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = Glibc.open(path, flags, 0o644)
        guard fd >= 0 else { throw ioError("cannot open", path) }
        return fd
    }

    /// fsyncs a directory so that the entries created in it survive a crash. With `missingIsFine`, a directory
    /// that does not exist (any more: its stream was deleted meanwhile) has nothing to make durable.
    static func syncDirectory(_ path: String, missingIsFine: Bool = false) throws(EddyError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 && missingIsFine && errno == ENOENT { return }
        guard fd >= 0 else { throw ioError("cannot open directory", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("cannot fsync directory", path) }
    }

    static func size(of fd: Int32, path: String) throws(EddyError) -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ioError("cannot stat", path) }
        return UInt64(st.st_size)
    }

    /// Reads exactly `count` bytes at `offset`, or fewer at the end of the file.
    static func pread(_ fd: Int32, path: String, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64)
        throws(EddyError) -> Int
    {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot read", path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    static func pwrite(_ fd: Int32, path: String, _ buffer: UnsafeRawBufferPointer, at offset: UInt64)
        throws(EddyError)
    {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot write", path)
            }
            done += n
        }
    }

    static func readWholeFile(_ path: String) throws(EddyError) -> [UInt8] {
        let fd = try open(path, create: false)
        defer { close(fd) }
        let size = Int(try self.size(of: fd, path: path))
        var bytes = [UInt8](repeating: 0, count: size)
        let n = try bytes.withMutableBytes { (b) throws(EddyError) -> Int in
            try pread(fd, path: path, into: b, at: 0)
        }
        return Array(bytes.prefix(n))
    }

    /// Writes `bytes` to `path` atomically and durably: a temporary file, fsync, rename, fsync of the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws(EddyError) {
        let temporary = path + ".tmp"
        let fd = try open(temporary, create: true)
        defer { close(fd) }
        guard ftruncate(fd, 0) == 0 else { throw ioError("cannot truncate", temporary) }
        try bytes.withBytes { (b) throws(EddyError) in try pwrite(fd, path: temporary, b, at: 0) }
        guard fsync(fd) == 0 else { throw ioError("cannot fsync", temporary) }
        guard rename(temporary, path) == 0 else { throw ioError("cannot rename to", path) }
        try syncDirectory(directory)
    }

    /// Names in a directory, without `.` and `..`; empty when the directory is missing.
    static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Removes a large file a piece at a time: drops its cached pages, then cuts it down by `step` bytes with a
    /// pause of `pauseMicroseconds` between cuts, so that freeing its blocks does not hold the filesystem's
    /// journal for long in one go (unlinking a 64 MiB journal file at once stalled the store's journal syncs for
    /// 10-20 ms). Missing is fine.
    static func removeGradually(_ path: String, step: Int = 4 << 20, pauseMicroseconds: UInt32 = 1000) {
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        if fd >= 0 {
            defer { close(fd) }
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            var st = stat()
            var size = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
            while size > step {
                size -= step
                guard ftruncate(fd, off_t(size)) == 0 else { break }
                usleep(pauseMicroseconds)
            }
        }
        remove(path)
    }

    /// Removes a file or an empty directory; missing is fine.
    static func remove(_ path: String) {
        if unlink(path) != 0 && errno == EISDIR { rmdir(path) }
    }
}
