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
    case stats = 0x0C
    case subscribe = 0x0D
    case credit = 0x0E
    case unsubscribe = 0x0F
    case admin = 0x10
    case ping = 0x11
    case forwarded = 0x20
    case heartbeat = 0x21

    case helloOK = 0x81
    case ok = 0x82
    case streamList = 0x84
    case streamInfoResult = 0x85
    case appendAck = 0x86
    case readResult = 0x87
    case segmentInfoResult = 0x88
    case writerStateResult = 0x8A
    case statsResult = 0x8C
    case heartbeatAck = 0xA1
    case error = 0xFF
}

/// A request from a client to a store.
public enum Request: Sendable, Equatable {
    /// Opens the conversation; must be the first frame.
    case hello(version: UInt16, token: String = "")
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
    /// The server's counters as a JSON object (docs/operations.md lists the keys).
    case stats
    /// Follows a segment from `offset` (cache nodes only): the node pushes `readResult` frames with this
    /// request's ID as bytes arrive, while the subscriber's window (`window` bytes at the start, more with
    /// ``credit(subscription:bytes:)``) is open; an empty one every `heartbeatMilliseconds` when nothing
    /// arrived; one with the sealed state at the end. An `error` frame ends the subscription.
    case subscribe(segment: SegmentID, offset: UInt64, window: UInt32, heartbeatMilliseconds: UInt32)
    /// Opens a subscription's window by `bytes` (the subscriber consumed them). One-way: never answered.
    case credit(subscription: UInt32, bytes: UInt32)
    /// Ends a subscription; frames already on their way may still arrive. One-way: never answered.
    case unsubscribe(subscription: UInt32)
    /// An administrative command of a cache node (`dlq.list`, `dlq.show`, `dlq.redrive`, `dlq.purge`,
    /// `queue.journal`; docs/protocol.md), its arguments a JSON object; answered with a JSON document
    /// (`statsResult`). Never forwarded.
    case admin(command: String, arguments: String)
    /// A request one cache node passes to the owner of its segment, with the sender's ring view. The owner
    /// answers ``EddyError/Code/staleEpoch`` when its view's fingerprint differs, and never forwards it again.
    indirect case forwarded(RingView, Request)
    /// A node's liveness probe to another, carrying the sender's view.
    case heartbeat(RingView)
    /// A connection's liveness probe: the server's connection handler answers `ok` at once, before anything
    /// else the connection waits for (a client sends it when requests wait and nothing has arrived for a while:
    /// no answer means the path is down).
    case ping

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
        case .stats: .stats
        case .subscribe: .subscribe
        case .credit: .credit
        case .unsubscribe: .unsubscribe
        case .admin: .admin
        case .forwarded: .forwarded
        case .heartbeat: .heartbeat
        case .ping: .ping
        }
    }
}

/// RingView is what a node says of its ring when it forwards or heartbeats: who it is, the epoch of its view,
/// and the fingerprint of the member list (equal lists, equal fingerprints, whatever the epochs).
public struct RingView: Sendable, Equatable {
    /// The sender's own address, `HOST:PORT`.
    public var from: String
    /// The epoch of the sender's ring.
    public var epoch: UInt64
    /// The fingerprint of the sender's member list.
    public var fingerprint: UInt64
    /// The members the sender has in its ring (for heartbeats; forwards may leave it empty).
    public var members: [String]

    /// Creates a view.
    public init(from: String, epoch: UInt64, fingerprint: UInt64, members: [String] = []) {
        self.from = from
        self.epoch = epoch
        self.fingerprint = fingerprint
        self.members = members
    }
}

/// A response from a store to a client.
public enum Response: Sendable, Equatable {
    /// The hello was accepted: the version in use, the largest frame the server accepts, and the server's
    /// zone label (empty when it has none; clients prefer nodes of their own zone).
    case helloOK(version: UInt16, maxFrameSize: UInt32, zone: String = "")
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
    /// The server's counters, a JSON object.
    case stats(String)
    /// The answer to a heartbeat: the receiver's view.
    case heartbeatAck(RingView)
    /// The request failed.
    case error(EddyError)
}

extension ByteBuffer {
    /// Writes `s` with a 16-bit length; longer text is cut at the last whole character that fits, so what is
    /// written is still UTF-8.
    mutating func writeShortString(_ s: String) {
        let utf8 = Array(s.utf8)
        var count = min(utf8.count, Int(UInt16.max))
        if count < utf8.count {
            while count > 0, utf8[count] & 0xC0 == 0x80 { count -= 1 }  // utf8[count] continues a character
        }
        writeInteger(UInt16(count))
        writeBytes(utf8[..<count])
    }

    mutating func readShortString() throws(EddyError) -> String {
        guard let n = readInteger(as: UInt16.self), let bytes = readSlice(length: Int(n)) else {
            throw short("a string")
        }
        return try bytes.validUTF8()
    }

    /// The readable bytes as text; bytes that are not UTF-8 are refused rather than replaced (a replaced string
    /// is no longer what the peer sent, and may no longer fit its length field).
    func validUTF8() throws(EddyError) -> String {
        guard
            let text = readableBytesView.withContiguousStorageIfAvailable({ String(validating: $0, as: UTF8.self) })
                ?? String(validating: Array(readableBytesView), as: UTF8.self)
        else {
            throw EddyError(.malformedFrame, "a string of the message is not UTF-8")
        }
        return text
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
        writeInteger(info.incarnation)
    }

    mutating func readSegmentState(_ id: SegmentID) throws(EddyError) -> SegmentInfo {
        let start = try read(UInt64.self)
        let length = try read(UInt64.self)
        let sealed = try read(UInt8.self) != 0
        return SegmentInfo(
            segment: id, startOffset: start, length: length, sealed: sealed, incarnation: try read(UInt64.self))
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

    mutating func writeRingView(_ view: RingView) {
        writeShortString(view.from)
        writeInteger(view.epoch)
        writeInteger(view.fingerprint)
        writeInteger(UInt16(clamping: view.members.count))
        for m in view.members.prefix(Int(UInt16.max)) { writeShortString(m) }
    }

    mutating func readRingView() throws(EddyError) -> RingView {
        let from = try readShortString()
        let epoch = try read(UInt64.self)
        let fingerprint = try read(UInt64.self)
        var members: [String] = []
        for _ in 0..<(try read(UInt16.self)) { members.append(try readShortString()) }
        return RingView(from: from, epoch: epoch, fingerprint: fingerprint, members: members)
    }

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
        case .hello(let version, let token):
            b.writeInteger(protocolMagic)
            b.writeInteger(version)
            if !token.isEmpty { b.writeShortString(token) }
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
        case .stats, .ping:
            break
        case .subscribe(let segment, let offset, let window, let heartbeat):
            b.writeSegment(segment)
            b.writeInteger(offset)
            b.writeInteger(window)
            b.writeInteger(heartbeat)
        case .credit(let subscription, let bytes):
            b.writeInteger(subscription)
            b.writeInteger(bytes)
        case .unsubscribe(let subscription):
            b.writeInteger(subscription)
        case .admin(let command, let arguments):
            b.writeShortString(command)
            let utf8 = Array(arguments.utf8)
            b.writeInteger(UInt32(utf8.count))
            b.writeBytes(utf8)
        case .forwarded(let view, let inner):
            b.writeRingView(view)
            var innerFrame = frame(inner, id: id, allocator: allocator)
            b.writeInteger(innerFrame.type)
            b.writeBuffer(&innerFrame.body)
        case .heartbeat(let view):
            b.writeRingView(view)
        }
        return Frame(type: request.type.rawValue, requestID: id, body: b)
    }

    /// Checks a connection's first frame: it must be a hello of this protocol version.
    /// - Throws: ``EddyError/Code/malformedFrame`` for anything but a hello, ``EddyError/Code/unsupportedVersion``
    ///   for another version; the server answers with the error and closes.
    /// - Returns: the hello's bearer token (empty when it carried none).
    @discardableResult
    public static func acceptHello(_ frame: Frame) throws(EddyError) -> String {
        guard case .hello(let version, let token) = try request(frame) else {
            throw EddyError(.malformedFrame, "the first frame must be a hello")
        }
        guard version == protocolVersion else {
            throw EddyError(
                .unsupportedVersion,
                "protocol version \(version) is not supported; this server speaks \(protocolVersion)")
        }
        return token
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
            let version = try b.read(UInt16.self)
            // The bearer token is optional: a hello without one ends after the version.
            request = .hello(version: version, token: b.readableBytes > 0 ? try b.readShortString() : "")
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
        case .stats:
            request = .stats
        case .ping:
            request = .ping
        case .subscribe:
            let segment = try b.readSegment()
            let offset = try b.read(UInt64.self)
            let window = try b.read(UInt32.self)
            request = .subscribe(
                segment: segment, offset: offset, window: window, heartbeatMilliseconds: try b.read(UInt32.self))
        case .credit:
            let subscription = try b.read(UInt32.self)
            request = .credit(subscription: subscription, bytes: try b.read(UInt32.self))
        case .unsubscribe:
            request = .unsubscribe(subscription: try b.read(UInt32.self))
        case .admin:
            let command = try b.readShortString()
            request = .admin(command: command, arguments: try b.readSizedBuffer().validUTF8())
        case .forwarded:
            let view = try b.readRingView()
            let innerType = try b.read(UInt8.self)
            guard innerType != MessageType.forwarded.rawValue, innerType != MessageType.hello.rawValue else {
                throw EddyError(.malformedFrame, "a forwarded request cannot carry a forward or a hello")
            }
            let inner = try Self.request(Frame(type: innerType, requestID: frame.requestID, body: b.readRest()))
            request = .forwarded(view, inner)
        case .heartbeat:
            request = .heartbeat(try b.readRingView())
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
        case .helloOK(let version, let maxFrameSize, let zone):
            type = .helloOK
            b.writeInteger(version)
            b.writeInteger(maxFrameSize)
            b.writeShortString(zone)
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
        case .stats(let json):
            type = .statsResult
            b.writeInteger(UInt32(json.utf8.count))
            b.writeString(json)
        case .heartbeatAck(let view):
            type = .heartbeatAck
            b.writeRingView(view)
        case .error(let error):
            type = .error
            b.writeInteger(error.code.rawValue)
            b.writeShortString(error.message)
        }
        return Frame(type: type.rawValue, requestID: id, body: b)
    }

    /// The frame of a read answer whose bytes are `slices` (in order, contiguous from `offset`), written without
    /// copying them: the same bytes as ``frame(_:id:allocator:)`` of ``Response/readResult(offset:info:data:)``.
    public static func readResultFrame(
        id: UInt32, offset: UInt64, info: SegmentInfo, slices: [ByteBuffer], allocator: ByteBufferAllocator
    ) -> OutboundFrame {
        // A small payload (a tail delivery of a few events) is copied behind the header; larger ones go as slices.
        OutboundFrame(
            type: MessageType.readResult.rawValue, requestID: id, headCapacity: 80, slices: slices,
            allocator: allocator, inlineUpTo: inlinePayloadLimit
        ) { head in
            head.writeSegment(info.segment)
            head.writeSegmentState(info)
            head.writeInteger(offset)
            head.writeInteger(UInt32(slices.reduce(0) { $0 + $1.readableBytes }))
        }
    }

    /// Read answers of at most this many bytes are copied into their frame's first buffer.
    public static let inlinePayloadLimit = 2048

    /// Parses a response frame.
    public static func response(_ frame: Frame) throws(EddyError) -> Response {
        var b = frame.body
        let response: Response
        switch MessageType(rawValue: frame.type) {
        case .helloOK:
            let version = try b.read(UInt16.self)
            let maxFrameSize = try b.read(UInt32.self)
            // The zone came later: a hello answer without it is a server without a zone.
            let zone = b.readableBytes > 0 ? try b.readShortString() : ""
            response = .helloOK(version: version, maxFrameSize: maxFrameSize, zone: zone)
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
        case .statsResult:
            response = .stats(try b.readSizedBuffer().validUTF8())
        case .heartbeatAck:
            response = .heartbeatAck(try b.readRingView())
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
