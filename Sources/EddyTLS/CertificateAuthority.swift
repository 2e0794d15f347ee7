import Crypto
import Foundation
import SwiftASN1
import X509

/// A small certificate authority made in-process: for `eddy up --secure` (a demo that needs no set-up) and for the
/// tests, which also need certificates that must be refused (expired, naming another host, from another authority).
/// Keys are P-256; certificates are X.509 v3 in PEM.
public struct CertificateAuthority: Sendable {
    /// The authority's own (self-signed) certificate, in PEM: what clients give as `--tls-ca`.
    public let certificatePEM: String
    private let certificate: Certificate
    private let key: P256.Signing.PrivateKey

    /// A new authority named `name`, valid from an hour ago for `days` days.
    public init(name: String = "Eddy demo authority", days: Int = 365) throws {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + Double(days) * 86_400,
            issuer: subject, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        certificatePEM = try certificate.serializeAsPEM().pemString
        self.key = key
    }

    /// A certificate and its key for a server (also usable as a client certificate, for mutual TLS), naming
    /// `hosts`: each is a DNS name or an IP address. Valid from `notBefore` to `notAfter`.
    public func issue(
        hosts: [String], name: String = "eddy", notBefore: Date = Date() - 3600,
        notAfter: Date = Date() + 365 * 86_400
    ) throws -> (certificatePEM: String, keyPEM: String) {
        let leafKey = P256.Signing.PrivateKey()
        let names: [GeneralName] = hosts.map { host in
            if let address = IPv4Address(host) { return .ipAddress(ASN1OctetString(contentBytes: address.bytes[...])) }
            return .dnsName(host)
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(leafKey.publicKey),
            notValidBefore: notBefore, notValidAfter: notAfter,
            issuer: certificate.subject, subject: try DistinguishedName { CommonName(name) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(key))
        return (try leaf.serializeAsPEM().pemString, leafKey.pemRepresentation)
    }

    /// Writes the authority's certificate as `ca.pem` and a certificate for `hosts` as `NAME.pem` and `NAME-key.pem`
    /// (the key readable by the owner only) into `folder`; returns the three paths.
    public func writeFiles(
        to folder: String, name: String, hosts: [String]
    ) throws -> (authority: String, certificate: String, key: String) {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let (certificatePEM, keyPEM) = try issue(hosts: hosts, name: name)
        let authority = folder + "/ca.pem"
        let certificate = folder + "/\(name).pem"
        let key = folder + "/\(name)-key.pem"
        try self.certificatePEM.write(toFile: authority, atomically: true, encoding: .utf8)
        try certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
        try keyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
        return (authority, certificate, key)
    }
}

/// A dotted IPv4 address's four bytes.
private struct IPv4Address {
    let bytes: [UInt8]

    init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard let byte = UInt8(part) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }
}
