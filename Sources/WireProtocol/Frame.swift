import NIOCore
import StreamModel

/// Frame is one protocol frame (docs/protocol.md, "Frames"): `u32 length | u8 type | u32 request ID | body`,
/// where length counts the bytes after itself (at least 5). Request IDs let one connection carry many
/// requests at once; a response carries the ID of its request.
public struct Frame: Sendable, Equatable {
    /// Bytes of the length field.
    public static let lengthSize = 4
    /// Bytes of the type and request ID after the length.
    public static let headerSize = 5
    /// The default largest frame (length field value) a peer accepts: 16 MiB of body plus the header.
    public static let defaultMaxFrameSize = (16 << 20) + 1024

    /// The message type (``MessageType``).
    public var type: UInt8
    /// The request this frame belongs to.
    public var requestID: UInt32
    /// The message body.
    public var body: ByteBuffer

    /// Creates a frame.
    public init(type: UInt8, requestID: UInt32, body: ByteBuffer) {
        self.type = type
        self.requestID = requestID
        self.body = body
    }
}

/// FrameDecoder cuts a byte stream into ``Frame``s. A length field over `maxFrameSize` or under the header
/// size is a protocol error (``EddyError/Code/frameTooLarge`` or ``EddyError/Code/malformedFrame``) that the
/// handler answers and then closes the connection: past a bad length there is no telling where frames start.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    /// The largest length field accepted.
    public let maxFrameSize: Int
    /// Bodies up to this size are copied out of the receive buffer instead of sliced from it, so that a frame
    /// kept by its receiver does not keep the whole receive buffer alive (which then cannot be reused, and a
    /// fresh one is allocated for the next read).
    public let copyBodiesUpTo: Int

    /// Creates a decoder.
    public init(maxFrameSize: Int = Frame.defaultMaxFrameSize, copyBodiesUpTo: Int = 0) {
        self.maxFrameSize = maxFrameSize
        self.copyBodiesUpTo = copyBodiesUpTo
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= maxFrameSize else {
            // A TLS record starts with its content type (20 to 23) and the major version 3: the peer speaks TLS.
            if (20...23).contains(length >> 24), (length >> 16) & 0xFF == 3 {
                throw EddyError(
                    .malformedFrame,
                    "the peer speaks TLS and this side plain TCP: connect with --tls-ca (or give the server --tls-cert)"
                )
            }
            throw EddyError(.frameTooLarge, "frame of \(length) bytes is over the maximum of \(maxFrameSize)")
        }
        guard Int(length) >= Frame.headerSize else {
            throw EddyError(.malformedFrame, "frame length \(length) is shorter than the 5-byte header")
        }
        guard buffer.readableBytes >= Frame.lengthSize + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: Frame.lengthSize)
        let type = buffer.readInteger(as: UInt8.self)!
        let requestID = buffer.readInteger(as: UInt32.self)!
        let size = Int(length) - Frame.headerSize
        var body: ByteBuffer
        if size <= copyBodiesUpTo {
            body = context.channel.allocator.buffer(capacity: size)
            body.writeImmutableBuffer(buffer.readSlice(length: size)!)
        } else {
            body = buffer.readSlice(length: size)!
        }
        context.fireChannelRead(wrapInboundOut(Frame(type: type, requestID: requestID, body: body)))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool)
        throws -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// FrameEncoder writes ``Frame``s.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    /// Creates an encoder.
    public init() {}

    public func encode(data: Frame, out: inout ByteBuffer) throws {
        out.reserveCapacity(minimumWritableBytes: Frame.lengthSize + Frame.headerSize + data.body.readableBytes)
        out.writeInteger(UInt32(Frame.headerSize + data.body.readableBytes))
        out.writeInteger(data.type)
        out.writeInteger(data.requestID)
        var body = data.body
        out.writeBuffer(&body)
    }
}

/// OutboundFrame is a frame as a list of buffers written one after another: the first starts with the frame's
/// length, type and request ID; the others are slices of shared memory (cached blocks) that go to the socket as
/// they are, without a copy per connection.
public struct OutboundFrame: Sendable {
    /// The buffers, in order.
    public var parts: [ByteBuffer]

    /// The frame's size on the wire.
    public var byteCount: Int { parts.reduce(0) { $0 + $1.readableBytes } }

    /// A frame whose body is `head` followed by `slices`; only the 9-byte frame header and `head` are written
    /// into a new buffer.
    public init(type: UInt8, requestID: UInt32, head: ByteBuffer, slices: [ByteBuffer], allocator: ByteBufferAllocator)
    {
        var head = head
        self.init(
            type: type, requestID: requestID, headCapacity: head.readableBytes, slices: slices, allocator: allocator
        ) { $0.writeBuffer(&head) }
    }

    /// A frame whose body is what `writeHead` writes followed by `slices`. The frame header and the head go into
    /// one new buffer of about `headCapacity` bytes, and so do the slices when they hold `inlineUpTo` bytes or
    /// fewer: for a small body one buffer and one write through the pipeline cost less than the copy.
    public init(
        type: UInt8, requestID: UInt32, headCapacity: Int, slices: [ByteBuffer], allocator: ByteBufferAllocator,
        inlineUpTo: Int = 0, writeHead: (inout ByteBuffer) -> Void
    ) {
        let sliced = slices.reduce(0) { $0 + $1.readableBytes }
        let inline = sliced <= inlineUpTo
        var first = allocator.buffer(
            capacity: Frame.lengthSize + Frame.headerSize + headCapacity + (inline ? sliced : 0))
        first.writeInteger(UInt32(0))  // the length, set once the head is written
        first.writeInteger(type)
        first.writeInteger(requestID)
        writeHead(&first)
        if inline { for s in slices { first.writeImmutableBuffer(s) } }
        first.setInteger(
            UInt32(first.readableBytes - Frame.lengthSize + (inline ? 0 : sliced)), at: first.readerIndex)
        parts = inline ? [first] : [first] + slices.filter { $0.readableBytes > 0 }
    }

    /// A plain frame: a header buffer and the body as it is.
    public init(_ frame: Frame, allocator: ByteBufferAllocator) {
        self.init(
            type: frame.type, requestID: frame.requestID, head: ByteBuffer(), slices: [frame.body], allocator: allocator
        )
    }
}

/// FrameWriter writes ``OutboundFrame``s: each part as its own buffer, so NIO gathers them into one `writev`
/// and bodies are never copied into a frame buffer.
public final class FrameWriter: ChannelOutboundHandler {
    public typealias OutboundIn = OutboundFrame
    public typealias OutboundOut = ByteBuffer

    /// Creates a writer.
    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        for (i, part) in frame.parts.enumerated() {
            context.write(wrapOutboundOut(part), promise: i == frame.parts.count - 1 ? promise : nil)
        }
    }
}
