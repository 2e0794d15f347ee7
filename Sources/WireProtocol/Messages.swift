import NIOCore
import StreamModel

/// The protocol's version; a peer that speaks another answers the hello with
/// ``EddyError/Code/unsupportedVersion``.
public let protocolVersion: UInt16 = 1

/// The four bytes a hello starts with.
public let protocolMagic: UInt32 = 0x4544_4459  // "EDDY"

/// MessageType numbers every request and response (docs/protocol.md, "Messages"). Responses have the
/// high bit set; `error` answers any request.
public enum MessageType: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case createStream = 0x02
    case deleteStream = 0x03
    case listStreams = 0x04
    case streamInfo = 0x05
    case append = 0x06
    case read = 0x07
    case seal = 0x08
    case truncate = 0x09
    case writerState = 0x0A
    case segmentInfo = 0x0B

    case helloOK = 0x81
    case ok = 0x82
    case streamList = 0x84
    case streamInfoResult = 0x85
    case appendAck = 0x86
    case readResult = 0x87
    case segmentInfoResult = 0x88
    case writerStateResult = 0x8A
    case error = 0xFF
}

/// A request from a client to a store.
public enum Request: Sendable, Equatable {
    /// Opens the conversation; must be the first frame.
    case hello(version: UInt16)
    /// Creates a stream of `segments` segments.
    case createStream(StreamName, segments: UInt32)
    /// Deletes a stream.
    case deleteStream(StreamName)
    /// Lists every stream.
    case listStreams
    /// One stream's segments.
    case streamInfo(StreamName)
    /// Appends whole event frames to one segment.
    case append(segment: SegmentID, writerID: String, firstEventNumber: Int64, frames: ByteBuffer)
    /// Reads bytes; `waitMilliseconds` > 0 makes a read at the tail wait for bytes that long at most.
    case read(segment: SegmentID, offset: UInt64, maxBytes: UInt32, waitMilliseconds: UInt32)
    /// Seals a segment.
    case seal(SegmentID)
    /// Truncates a segment at an event boundary.
    case truncate(SegmentID, offset: UInt64)
    /// The highest event number a writer wrote to a segment.
    case writerState(SegmentID, writerID: String)
    /// One segment's state.
    case segmentInfo(SegmentID)

    /// The frame type of this request.
    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .createStream: .createStream
        case .deleteStream: .deleteStream
        case .listStreams: .listStreams
        case .streamInfo: .streamInfo
        case .append: .append
        case .read: .read
        case .seal: .seal
        case .truncate: .truncate
        case .writerState: .writerState
        case .segmentInfo: .segmentInfo
        }
    }
}

/// A response from a store to a client.
public enum Response: Sendable, Equatable {
    /// The hello was accepted: the version in use and the largest frame the server accepts.
    case helloOK(version: UInt16, maxFrameSize: UInt32)
    /// Done, nothing to return.
    case ok
    /// Every stream.
    case streamList([StreamInfo])
    /// One stream.
    case streamInfo(StreamInfo)
    /// Where an append landed.
    case appendAck(AppendAck)
    /// Bytes read from `offset`, with the segment's state.
    case readResult(offset: UInt64, info: SegmentInfo, data: ByteBuffer)
    /// One segment's state.
    case segmentInfo(SegmentInfo)
    /// A writer's highest event number, or nil.
    case writerState(Int64?)
    /// The request failed.
    case error(EddyError)
}

extension ByteBuffer {
    mutating func writeShortString(_ s: String) {
        let utf8 = s.utf8
        writeInteger(UInt16(clamping: utf8.count))
        writeBytes(utf8.prefix(Int(UInt16.max)))
    }

    mutating func readShortString() throws(EddyError) -> String {
        guard let n = readInteger(as: UInt16.self), let s = readString(length: Int(n)) else {
            throw short("a string")
        }
        return s
    }

    mutating func readStreamName() throws(EddyError) -> StreamName {
        try StreamName(parsing: try readShortString())
    }

    mutating func writeSegment(_ id: SegmentID) {
        writeShortString(id.stream.description)
        writeInteger(id.number)
    }

    mutating func readSegment() throws(EddyError) -> SegmentID {
        let stream = try readStreamName()
        return SegmentID(stream: stream, number: try read(UInt32.self))
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(EddyError) -> T {
        guard let v = readInteger(as: T.self) else { throw short("\(T.self)") }
        return v
    }

    mutating func writeSegmentState(_ info: SegmentInfo) {
        writeInteger(info.startOffset)
        writeInteger(info.length)
        writeInteger(UInt8(info.sealed ? 1 : 0))
    }

    mutating func readSegmentState(_ id: SegmentID) throws(EddyError) -> SegmentInfo {
        let start = try read(UInt64.self)
        let length = try read(UInt64.self)
        return SegmentInfo(segment: id, startOffset: start, length: length, sealed: try read(UInt8.self) != 0)
    }

    mutating func writeStreamInfo(_ info: StreamInfo) {
        writeShortString(info.name.description)
        writeInteger(UInt32(info.segments.count))
        for s in info.segments { writeSegmentState(s) }
    }

    mutating func readStreamInfo() throws(EddyError) -> StreamInfo {
        let name = try readStreamName()
        let count = try read(UInt32.self)
        guard Int(count) * 17 <= readableBytes else { throw short("segment list") }
        var segments: [SegmentInfo] = []
        for n in 0..<count { segments.append(try readSegmentState(SegmentID(stream: name, number: n))) }
        return StreamInfo(name: name, segments: segments)
    }

    mutating func readRest() -> ByteBuffer { readSlice(length: readableBytes)! }

    mutating func readSizedBuffer() throws(EddyError) -> ByteBuffer {
        let n = try read(UInt32.self)
        guard let b = readSlice(length: Int(n)) else { throw short("a byte field of \(n) bytes") }
        return b
    }
}

private func short(_ what: String) -> EddyError {
    EddyError(.malformedFrame, "message body ends inside \(what)")
}

/// MessageCodec turns requests and responses into frames and back; it is plain code over `ByteBuffer`, so
/// the client, the server and tests share it.
public enum MessageCodec {
    /// The frame of a request.
    public static func frame(_ request: Request, id: UInt32, allocator: ByteBufferAllocator = .init()) -> Frame {
        var b = allocator.buffer(capacity: 64)
        switch request {
        case .hello(let version):
            b.writeInteger(protocolMagic)
            b.writeInteger(version)
        case .createStream(let name, let segments):
            b.writeShortString(name.description)
            b.writeInteger(segments)
        case .deleteStream(let name), .streamInfo(let name):
            b.writeShortString(name.description)
        case .listStreams:
            break
        case .append(let segment, let writerID, let first, var frames):
            b.writeSegment(segment)
            b.writeShortString(writerID)
            b.writeInteger(first)
            b.writeInteger(UInt32(frames.readableBytes))
            b.writeBuffer(&frames)
        case .read(let segment, let offset, let maxBytes, let wait):
            b.writeSegment(segment)
            b.writeInteger(offset)
            b.writeInteger(maxBytes)
            b.writeInteger(wait)
        case .seal(let segment), .segmentInfo(let segment):
            b.writeSegment(segment)
        case .truncate(let segment, let offset):
            b.writeSegment(segment)
            b.writeInteger(offset)
        case .writerState(let segment, let writerID):
            b.writeSegment(segment)
            b.writeShortString(writerID)
        }
        return Frame(type: request.type.rawValue, requestID: id, body: b)
    }

    /// Parses a request frame.
    /// - Throws: ``EddyError/Code/unknownMessageType`` for a type that is not a request,
    ///   ``EddyError/Code/malformedFrame`` for a body that does not parse, ``EddyError/Code/invalidName``
    ///   for a bad stream name.
    public static func request(_ frame: Frame) throws(EddyError) -> Request {
        var b = frame.body
        let request: Request
        switch MessageType(rawValue: frame.type) {
        case .hello:
            guard try b.read(UInt32.self) == protocolMagic else {
                throw EddyError(.malformedFrame, "hello without the EDDY magic: not an Eddy client")
            }
            request = .hello(version: try b.read(UInt16.self))
        case .createStream:
            let name = try b.readStreamName()
            request = .createStream(name, segments: try b.read(UInt32.self))
        case .deleteStream:
            request = .deleteStream(try b.readStreamName())
        case .listStreams:
            request = .listStreams
        case .streamInfo:
            request = .streamInfo(try b.readStreamName())
        case .append:
            let segment = try b.readSegment()
            let writer = try b.readShortString()
            let first = try b.read(Int64.self)
            request = .append(
                segment: segment, writerID: writer, firstEventNumber: first, frames: try b.readSizedBuffer())
        case .read:
            let segment = try b.readSegment()
            let offset = try b.read(UInt64.self)
            let maxBytes = try b.read(UInt32.self)
            request = .read(
                segment: segment, offset: offset, maxBytes: maxBytes, waitMilliseconds: try b.read(UInt32.self))
        case .seal:
            request = .seal(try b.readSegment())
        case .truncate:
            let segment = try b.readSegment()
            request = .truncate(segment, offset: try b.read(UInt64.self))
        case .writerState:
            let segment = try b.readSegment()
            request = .writerState(segment, writerID: try b.readShortString())
        case .segmentInfo:
            request = .segmentInfo(try b.readSegment())
        default:
            throw EddyError(.unknownMessageType, "unknown request type 0x\(String(frame.type, radix: 16))")
        }
        guard b.readableBytes == 0 else {
            throw EddyError(.malformedFrame, "\(b.readableBytes) unexpected bytes after the message body")
        }
        return request
    }

    /// The frame of a response.
    public static func frame(_ response: Response, id: UInt32, allocator: ByteBufferAllocator = .init()) -> Frame {
        var b = allocator.buffer(capacity: 32)
        let type: MessageType
        switch response {
        case .helloOK(let version, let maxFrameSize):
            type = .helloOK
            b.writeInteger(version)
            b.writeInteger(maxFrameSize)
        case .ok:
            type = .ok
        case .streamList(let streams):
            type = .streamList
            b.writeInteger(UInt32(streams.count))
            for s in streams { b.writeStreamInfo(s) }
        case .streamInfo(let info):
            type = .streamInfoResult
            b.writeStreamInfo(info)
        case .appendAck(let ack):
            type = .appendAck
            b.writeSegment(ack.segment)
            b.writeInteger(ack.firstOffset)
            b.writeInteger(ack.eventCount)
            b.writeInteger(UInt8(ack.duplicate ? 1 : 0))
        case .readResult(let offset, let info, var data):
            type = .readResult
            b.writeSegment(info.segment)
            b.writeSegmentState(info)
            b.writeInteger(offset)
            b.writeInteger(UInt32(data.readableBytes))
            b.writeBuffer(&data)
        case .segmentInfo(let info):
            type = .segmentInfoResult
            b.writeSegment(info.segment)
            b.writeSegmentState(info)
        case .writerState(let last):
            type = .writerStateResult
            b.writeInteger(UInt8(last == nil ? 0 : 1))
            b.writeInteger(last ?? -1)
        case .error(let error):
            type = .error
            b.writeInteger(error.code.rawValue)
            b.writeShortString(error.message)
        }
        return Frame(type: type.rawValue, requestID: id, body: b)
    }

    /// Parses a response frame.
    public static func response(_ frame: Frame) throws(EddyError) -> Response {
        var b = frame.body
        let response: Response
        switch MessageType(rawValue: frame.type) {
        case .helloOK:
            let version = try b.read(UInt16.self)
            response = .helloOK(version: version, maxFrameSize: try b.read(UInt32.self))
        case .ok:
            response = .ok
        case .streamList:
            var streams: [StreamInfo] = []
            for _ in 0..<(try b.read(UInt32.self)) { streams.append(try b.readStreamInfo()) }
            response = .streamList(streams)
        case .streamInfoResult:
            response = .streamInfo(try b.readStreamInfo())
        case .appendAck:
            let segment = try b.readSegment()
            let offset = try b.read(UInt64.self)
            let count = try b.read(UInt32.self)
            let duplicate = try b.read(UInt8.self) != 0
            response = .appendAck(
                AppendAck(segment: segment, firstOffset: offset, eventCount: count, duplicate: duplicate))
        case .readResult:
            let segment = try b.readSegment()
            let info = try b.readSegmentState(segment)
            let offset = try b.read(UInt64.self)
            response = .readResult(offset: offset, info: info, data: try b.readSizedBuffer())
        case .segmentInfoResult:
            let segment = try b.readSegment()
            response = .segmentInfo(try b.readSegmentState(segment))
        case .writerStateResult:
            let has = try b.read(UInt8.self) != 0
            let last = try b.read(Int64.self)
            response = .writerState(has ? last : nil)
        case .error:
            let raw = try b.read(UInt16.self)
            let message = try b.readShortString()
            response = .error(EddyError(EddyError.Code(rawValue: raw) ?? .internalError, message))
        default:
            throw EddyError(.unknownMessageType, "unknown response type 0x\(String(frame.type, radix: 16))")
        }
        guard b.readableBytes == 0 else {
            throw EddyError(.malformedFrame, "\(b.readableBytes) unexpected bytes after the message body")
        }
        return response
    }
}
