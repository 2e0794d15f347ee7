import CIOUring
import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// Which I/O path the journal uses; chosen at start-up and reported in the start-up log line.
public enum IOBackend: String, Sendable, CaseIterable {
    /// Probe io_uring and fall back to pwrite + fdatasync when the kernel or sandbox refuses it.
    case auto
    /// io_uring through liburing: a linked write + fdatasync submitted together.
    case ioUring = "io_uring"
    /// Plain pwrite then fdatasync.
    case posix
}

/// DurableWriter writes bytes at an offset of one open file and returns only when they are on disk.
protocol DurableWriter: AnyObject {
    /// Writes `bytes` at `offset` and makes them durable (data and the size needed to read them back).
    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(EddyError)
    /// Writes `bytes` at `offset` without waiting for the disk (segment files; the journal holds the truth).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(EddyError)
}

/// PosixWriter: pwrite + fdatasync.
final class PosixWriter: DurableWriter {
    let fd: Int32
    let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(EddyError) {
        try FileSystem.pwrite(fd, path: path, bytes, at: offset)
        guard fdatasync(fd) == 0 else { throw FileSystem.ioError("cannot fdatasync", path) }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(EddyError) {
        try FileSystem.pwrite(fd, path: path, bytes, at: offset)
    }
}

/// IOUringRing owns one io_uring instance; only the journal thread uses it, so it needs no lock.
final class IOUringRing {
    var ring = io_uring()

    /// Sets up a ring of `entries` submission slots.
    /// - Throws: ``EddyError/Code/ioError`` with the kernel's reason when io_uring is refused.
    init(entries: UInt32 = 64) throws(EddyError) {
        let rc = io_uring_queue_init(entries, &ring, 0)
        guard rc == 0 else {
            throw EddyError(.ioError, "io_uring_queue_init failed: \(FileSystem.errnoText(-rc))")
        }
    }

    deinit { io_uring_queue_exit(&ring) }

    /// Submits a write linked to an fdatasync of the same file and waits for both.
    /// Short writes are finished with further linked pairs.
    func writeAndSync(fd: Int32, path: String, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, sync: Bool)
        throws(EddyError)
    {
        precondition(!bytes.isEmpty, "io_uring writes need at least one byte")
        var done = 0
        repeat {
            guard let write = io_uring_get_sqe(&ring) else {
                throw EddyError(.ioError, "io_uring submission queue full")
            }
            let length = UInt32(min(bytes.count - done, Int(Int32.max)))
            io_uring_prep_write(write, fd, bytes.baseAddress.map { $0 + done }, length, offset + UInt64(done))
            write.pointee.user_data = 1
            var expected = 1
            if sync {
                io_uring_sqe_set_flags(write, UInt32(eddy_IOSQE_IO_LINK))
                guard let fsync = io_uring_get_sqe(&ring) else {
                    throw EddyError(.ioError, "io_uring submission queue full")
                }
                io_uring_prep_fsync(fsync, fd, eddy_IORING_FSYNC_DATASYNC)
                fsync.pointee.user_data = 2
                expected = 2
            }
            let submitted = io_uring_submit_and_wait(&ring, UInt32(expected))
            guard submitted >= 0 else {
                throw EddyError(.ioError, "io_uring_submit_and_wait on \(path): \(FileSystem.errnoText(-submitted))")
            }
            var written = 0
            var syncFailed: Int32 = 0
            var writeFailed: Int32 = 0
            for _ in 0..<expected {
                var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
                let rc = io_uring_wait_cqe(&ring, &cqe)
                guard rc == 0, let c = cqe else {
                    throw EddyError(.ioError, "io_uring_wait_cqe on \(path): \(FileSystem.errnoText(-rc))")
                }
                if c.pointee.user_data == 1 {
                    if c.pointee.res < 0 { writeFailed = -c.pointee.res } else { written = Int(c.pointee.res) }
                } else if c.pointee.res < 0 {
                    syncFailed = -c.pointee.res
                }
                io_uring_cqe_seen(&ring, c)
            }
            if writeFailed != 0 && writeFailed != EINTR && writeFailed != EAGAIN {
                throw FileSystem.ioError("cannot write", path, writeFailed)
            }
            done += written
            // A short write cancels its linked fdatasync (ECANCELED); the next round writes the rest and syncs.
            if done >= bytes.count && sync && syncFailed != 0 {
                throw FileSystem.ioError("cannot fdatasync", path, syncFailed)
            }
        } while done < bytes.count
    }
}

/// IOUringWriter: io_uring write linked to fdatasync, one submission, one wait.
final class IOUringWriter: DurableWriter {
    let fd: Int32
    let path: String
    let ring: IOUringRing

    init(fd: Int32, path: String, ring: IOUringRing) {
        self.fd = fd
        self.path = path
        self.ring = ring
    }

    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(EddyError) {
        try ring.writeAndSync(fd: fd, path: path, bytes, at: offset, sync: true)
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(EddyError) {
        try ring.writeAndSync(fd: fd, path: path, bytes, at: offset, sync: false)
    }
}

/// IOPath is what the store resolved ``IOBackend`` to, with the reason for a fallback.
public struct IOPath: Sendable, CustomStringConvertible {
    /// The backend in use: ``IOBackend/ioUring`` or ``IOBackend/posix``.
    public let backend: IOBackend
    /// Why io_uring is not in use, when it is not.
    public let fallbackReason: String?

    public var description: String {
        switch backend {
        case .ioUring: return "io_uring (liburing, linked write + fdatasync)"
        default:
            return "pwrite + fdatasync" + (fallbackReason.map { " (io_uring unavailable: \($0))" } ?? "")
        }
    }

    /// Resolves a requested backend, probing io_uring for ``IOBackend/auto``.
    static func resolve(_ requested: IOBackend) throws(EddyError) -> (IOPath, IOUringRing?) {
        switch requested {
        case .posix:
            return (IOPath(backend: .posix, fallbackReason: "posix requested"), nil)
        case .ioUring:
            return (IOPath(backend: .ioUring, fallbackReason: nil), try IOUringRing())
        case .auto:
            do throws(EddyError) {
                return (IOPath(backend: .ioUring, fallbackReason: nil), try IOUringRing())
            } catch {
                return (IOPath(backend: .posix, fallbackReason: error.message), nil)
            }
        }
    }
}
