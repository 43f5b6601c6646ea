package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

// Server implements meshv1.IdentityServer: it certifies proxies' identities.
type Server struct {
	meshv1.UnimplementedIdentityServer

	ca       *CA
	auth     Authenticator
	lifetime time.Duration
	log      *slog.Logger
}

// NewServer returns an Identity server that authenticates callers with auth
// and issues leaves from ca valid for lifetime (DefaultLeafLifetime, 24 h, if
// zero or less). Register it with meshv1.RegisterIdentityServer.
func NewServer(ca *CA, auth Authenticator, lifetime time.Duration) *Server {
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	return &Server{ca: ca, auth: auth, lifetime: lifetime, log: slog.Default().With("component", "identity")}
}

// Certify authenticates the token as the requested identity, checks the CSR
// and issues a leaf. Errors carry precise codes (see identity.proto) and say
// what was wrong.
func (s *Server) Certify(ctx context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	resp, err := s.certify(ctx, req)
	if err != nil {
		s.log.WarnContext(ctx, "certify refused", "identity", req.GetIdentity(), "code", status.Code(err).String(), "error", status.Convert(err).Message())
		return nil, err
	}
	s.log.InfoContext(ctx, "certified", "identity", req.GetIdentity(), "valid_until", resp.GetValidUntil().AsTime())
	return resp, nil
}

func (s *Server) certify(ctx context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	id := req.GetIdentity()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "identity is required")
	}
	if err := checkDNSName(id); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "identity %q is not a DNS name: %v", id, err)
	}
	if err := s.auth.Authenticate(ctx, id, req.GetToken()); err != nil {
		switch {
		case errors.Is(err, context.Canceled):
			return nil, status.Errorf(codes.Canceled, "authenticating identity %q: %v", id, err)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, status.Errorf(codes.DeadlineExceeded, "authenticating identity %q: %v", id, err)
		case errors.Is(err, ErrAuthenticatorUnavailable):
			return nil, status.Errorf(codes.Unavailable, "cannot authenticate identity %q now: %v", id, err)
		}
		return nil, status.Errorf(codes.Unauthenticated, "token for identity %q is not valid: %v", id, err)
	}
	der := req.GetCertificateSigningRequest()
	if len(der) == 0 {
		return nil, status.Error(codes.InvalidArgument, "certificate_signing_request is required")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate_signing_request is not a DER PKCS#10 request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate_signing_request signature does not verify: %v", err)
	}
	if err := ValidateCSR(csr, id); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate_signing_request: %v", err)
	}
	leaf, chain, notAfter, err := s.ca.Sign(csr, id, s.lifetime)
	switch {
	case errors.Is(err, ErrIssuerNotValid):
		return nil, status.Errorf(codes.Unavailable, "cannot issue a certificate for %q now: %v", id, err)
	case errors.Is(err, ErrInvalidCSR):
		return nil, status.Errorf(codes.InvalidArgument, "certificate_signing_request: %v", err)
	case err != nil:
		return nil, status.Errorf(codes.Internal, "issuing a certificate for %q: %v", id, err)
	}
	return &meshv1.CertifyResponse{
		LeafCertificate:          leaf,
		IntermediateCertificates: chain,
		ValidUntil:               timestamppb.New(notAfter),
	}, nil
}

// ValidateCSR checks that a CSR asks for exactly identity: an ECDSA P-256 key,
// one SAN that is the DNS name identity, no IP, URI or email SAN, and a common
// name that is empty or identity. The error lists everything found wrong.
func ValidateCSR(csr *x509.CertificateRequest, identity string) error {
	if csr == nil {
		return errors.New("no certificate signing request")
	}
	var problems []string
	if err := checkKey(csr.PublicKey); err != nil {
		problems = append(problems, err.Error())
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != identity {
		problems = append(problems, fmt.Sprintf("common name is %q", cn))
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != identity {
		problems = append(problems, fmt.Sprintf("DNS SANs are %q", csr.DNSNames))
	}
	if len(csr.IPAddresses) > 0 {
		problems = append(problems, fmt.Sprintf("it has IP SANs %v", csr.IPAddresses))
	}
	if len(csr.URIs) > 0 {
		uris := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			uris[i] = u.String()
		}
		problems = append(problems, fmt.Sprintf("it has URI SANs %q", uris))
	}
	if len(csr.EmailAddresses) > 0 {
		problems = append(problems, fmt.Sprintf("it has email SANs %q", csr.EmailAddresses))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("must be for an ECDSA P-256 key with the single DNS SAN %q, but %s", identity, strings.Join(problems, "; "))
}

// checkDNSName accepts a lower-case DNS name: dot-separated labels of 1 to 63
// letters, digits and hyphens, not starting or ending with a hyphen, 253
// characters at most.
func checkDNSName(name string) error {
	if len(name) > 253 {
		return fmt.Errorf("%d characters, more than 253", len(name))
	}
	for i, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Errorf("label %d is empty", i+1)
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q is longer than 63 characters", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("label %q has %q (only a-z, 0-9 and '-' are allowed)", label, r)
			}
		}
	}
	return nil
}
