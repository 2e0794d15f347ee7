import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import StreamModel
@testable import WireProtocol

@Suite("WireProtocol")
struct WireProtocolTests {
    static let name = try! StreamName(parsing: "scope/stream")
    static let segment = SegmentID(stream: name, number: 7)

    func encoded(_ frames: [Frame]) -> ByteBuffer {
        var out = ByteBuffer()
        for f in frames { try! FrameEncoder().encode(data: f, out: &out) }
        return out
    }

    @Test("the frame decoder passes NIO's verifier: bytes one at a time, many frames per buffer")
    func decoderVerifier() throws {
        let frames = [
            Frame(type: 1, requestID: 1, body: ByteBuffer(string: "")),
            Frame(type: 6, requestID: 2, body: ByteBuffer(string: "some body")),
            Frame(type: 0x87, requestID: UInt32.max, body: ByteBuffer(bytes: [UInt8](repeating: 9, count: 3000))),
        ]
        let pairs = frames.map { (encoded([$0]), [$0]) } + [(encoded(frames), frames)]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder() }
    }

    @Test("oversized and undersized frames are refused with typed errors")
    func badLengths() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 100)))
        var big = ByteBuffer()
        big.writeInteger(UInt32(101))
        big.writeBytes([UInt8](repeating: 0, count: 8))
        #expect(throws: EddyError(.frameTooLarge, "frame of 101 bytes is over the maximum of 100")) {
            try channel.writeInbound(big)
        }
        let channel2 = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var tiny = ByteBuffer()
        tiny.writeInteger(UInt32(3))
        tiny.writeBytes([1, 2, 3])
        #expect(throws: EddyError.self) { try channel2.writeInbound(tiny) }
    }

    static let requests: [Request] = [
        .hello(version: protocolVersion),
        .hello(version: protocolVersion, token: "a bearer token; a JWT is longer"),
        .createStream(name, segments: 12),
        .deleteStream(name),
        .listStreams,
        .streamInfo(name),
        .append(segment: segment, writerID: "writer-1", firstEventNumber: 42, frames: ByteBuffer(string: "frames")),
        .read(segment: segment, offset: 1 << 40, maxBytes: 65536, waitMilliseconds: 250),
        .seal(segment),
        .truncate(segment, offset: 99),
        .writerState(segment, writerID: "w"),
        .segmentInfo(segment),
        .stats,
        .ping,
        .subscribe(segment: segment, offset: 1 << 33, window: 4 << 20, heartbeatMilliseconds: 500),
        .credit(subscription: 7, bytes: 1 << 21),
        .unsubscribe(subscription: 7),
        .admin(command: "dlq.redrive", arguments: "{\"ids\":[1,2],\"per_second\":5}"),
        .admin(command: "queue.stats", arguments: ""),
    ]

    @Test("every request round-trips through its frame", arguments: requests)
    func requestRoundTrip(request: Request) throws {
        let frame = MessageCodec.frame(request, id: 77)
        #expect(frame.requestID == 77)
        #expect(try MessageCodec.request(frame) == request)
        // Cut short anywhere: a typed error, never a crash or a wrong message.
        for cut in 0..<frame.body.readableBytes {
            var short = frame
            short.body = frame.body.getSlice(at: frame.body.readerIndex, length: cut)!
            if case .hello(let version, let token) = request, !token.isEmpty, cut == 6 {
                // The token is optional: a hello cut right after its version is a hello without one.
                #expect(try MessageCodec.request(short) == .hello(version: version))
                continue
            }
            #expect(throws: EddyError.self) { try MessageCodec.request(short) }
        }
        var long = frame
        long.body.writeInteger(UInt8(0))
        #expect(throws: EddyError.self) { try MessageCodec.request(long) }
    }

    static let info = SegmentInfo(segment: segment, startOffset: 10, length: 20, sealed: true)
    static let responses: [Response] = [
        .helloOK(version: 1, maxFrameSize: 1 << 24),
        .ok,
        .streamList([
            StreamInfo(
                name: name,
                segments: [
                    SegmentInfo(segment: SegmentID(stream: name, number: 0), startOffset: 0, length: 5, sealed: false)
                ])
        ]),
        .streamList([]),
        .appendAck(AppendAck(segment: segment, firstOffset: 1234, eventCount: 10, duplicate: true)),
        .readResult(offset: 15, info: info, data: ByteBuffer(string: "bytes")),
        .segmentInfo(info),
        .writerState(nil),
        .writerState(17),
        .error(EddyError(.segmentSealed, "segment is sealed")),
    ]

    @Test("every response round-trips through its frame", arguments: responses)
    func responseRoundTrip(response: Response) throws {
        let frame = MessageCodec.frame(response, id: 5)
        #expect(try MessageCodec.response(frame) == response)
    }

    @Test("unknown types and bad names are typed errors")
    func unknown() {
        #expect(throws: EddyError.self) {
            try MessageCodec.request(Frame(type: 0x55, requestID: 1, body: ByteBuffer()))
        }
        #expect(throws: EddyError.self) {
            try MessageCodec.response(Frame(type: 0x02, requestID: 1, body: ByteBuffer()))
        }
        var body = ByteBuffer()
        body.writeShortString("bad name/x")
        body.writeInteger(UInt32(1))
        do {
            _ = try MessageCodec.request(Frame(type: MessageType.createStream.rawValue, requestID: 1, body: body))
            Issue.record("a bad name was accepted")
        } catch {
            #expect(error.code == .invalidName)
        }
    }

    @Test("addresses parse HOST:PORT and refuse anything else")
    func addresses() throws {
        #expect(try ServerAddress(parsing: "127.0.0.1:9090") == ServerAddress(host: "127.0.0.1", port: 9090))
        #expect(try ServerAddress(parsing: "[::1]:80") == ServerAddress(host: "::1", port: 80))
        for bad in ["localhost", ":80", "h:99999", "h:x"] {
            #expect(throws: EddyError.self) { try ServerAddress(parsing: bad) }
        }
    }
}
