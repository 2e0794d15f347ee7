import StreamModel

/// SegmentFileSet carries out what journal records mean for the segment files: create, write, delete,
/// punch. The journal thread and recovery both apply records through it, and it remembers what the next
/// checkpoint must fsync.
struct SegmentFileSet {
    let data: String
    var files: [SegmentID: SegmentFile] = [:]
    /// Files written since the last checkpoint.
    var dirty: Set<SegmentID> = []
    /// Directories whose entries changed since the last checkpoint.
    var changedDirectories: Set<String> = []
    /// Bytes written per segment whose writeback has not been started yet.
    var unstarted: [SegmentID: Range<UInt64>] = [:]
    /// Writeback is started once this many bytes of a segment are waiting.
    static let writebackChunk: UInt64 = 1 << 20

    init(data: String) { self.data = data }

    mutating func apply(_ record: JournalRecord) throws(EddyError) {
        switch record {
        case .createStream(let name, let count):
            let directory = SegmentFile.directory(data: data, stream: name)
            try FileSystem.makeDirectories(directory)
            changedDirectories.formUnion([directory, "\(data)/segments/\(name.scope)", "\(data)/segments"])
            for n in 0..<count {
                let id = SegmentID(stream: name, number: n)
                files[id] = try SegmentFile(path: SegmentFile.path(data: data, segment: id), truncate: true)
                dirty.insert(id)
            }
        case .deleteStream(let name):
            for id in files.keys where id.stream == name {
                files.removeValue(forKey: id)
                unstarted.removeValue(forKey: id)
                dirty.remove(id)
                FileSystem.remove(SegmentFile.path(data: data, segment: id))
            }
            let directory = SegmentFile.directory(data: data, stream: name)
            FileSystem.remove(directory)
            changedDirectories.remove(directory)
            changedDirectories.insert("\(data)/segments/\(name.scope)")
        case .append(let a):
            guard let file = files[a.segment] else {
                throw EddyError(.internalError, "no open file for \(a.segment)")
            }
            try file.write(a.frames, at: a.offset)
            dirty.insert(a.segment)
            let end = a.offset + UInt64(a.frames.count)
            let waiting = (unstarted[a.segment]?.lowerBound ?? a.offset)..<end
            if waiting.count >= Self.writebackChunk {
                file.startWriteback(waiting)
                unstarted[a.segment] = nil
            } else {
                unstarted[a.segment] = waiting
            }
        case .seal:
            break
        case .truncate(let id, let offset):
            files[id]?.punchHole(below: offset)
        }
    }

    /// Takes what the next checkpoint must make durable: the files written and the directories changed since
    /// the last call.
    mutating func takeUnsynced() -> (files: [SegmentFile], directories: [String]) {
        defer {
            dirty.removeAll()
            changedDirectories.removeAll()
            unstarted.removeAll()
        }
        return (dirty.compactMap { files[$0] }, Array(changedDirectories))
    }
}
