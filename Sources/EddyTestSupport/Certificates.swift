import EddyTLS
import Foundation

/// Certificates made in-process for one test, as files in a fresh folder.
public struct CertificateFiles: Sendable {
    public let folder = NSTemporaryDirectory() + "eddy-tls-" + UUID().uuidString
    public let authority: CertificateAuthority

    /// A fresh folder with a new authority's certificate as `ca.pem`.
    public init() throws {
        authority = try CertificateAuthority(name: "test authority")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try authority.certificatePEM.write(toFile: caPath, atomically: true, encoding: .utf8)
    }

    /// The authority's certificate file.
    public var caPath: String { folder + "/ca.pem" }

    /// Writes a certificate (by `issuer`, this authority by default) for `hosts` as NAME.pem and NAME-key.pem.
    public func write(
        _ name: String, hosts: [String] = ["127.0.0.1", "localhost"], notBefore: Date = Date() - 3600,
        notAfter: Date = Date() + 86_400, issuer: CertificateAuthority? = nil
    ) throws -> ServerTLSFiles {
        let (certificate, key) = try (issuer ?? authority).issue(
            hosts: hosts, name: name, notBefore: notBefore, notAfter: notAfter)
        let paths = ServerTLSFiles(certificate: folder + "/\(name).pem", key: folder + "/\(name)-key.pem")
        try certificate.write(toFile: paths.certificate, atomically: true, encoding: .utf8)
        try key.write(toFile: paths.key, atomically: true, encoding: .utf8)
        return paths
    }

    /// Deletes the folder.
    public func remove() { try? FileManager.default.removeItem(atPath: folder) }
}
