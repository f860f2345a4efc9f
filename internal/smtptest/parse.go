package smtptest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
)

// Parsed is a received message taken apart.
type Parsed struct {
	// Header is the top-level header, as received (encoded words left
	// encoded).
	Header mail.Header
	// Subject is the Subject header with encoded words decoded.
	Subject string
	// From and To are the address headers, decoded.
	From *mail.Address
	To   []*mail.Address
	// Text and HTML are the decoded bodies of the text/plain and
	// text/html parts, with CRLF line ends turned into LF ("" when
	// absent).
	Text string
	HTML string
	// Types lists the content types met, outermost first (such as
	// multipart/alternative, text/plain, text/html).
	Types []string
}

// Parse takes the message apart: headers, the text part and the HTML
// part, whatever their transfer encoding.
func (m Message) Parse() (*Parsed, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Raw))
	if err != nil {
		return nil, fmt.Errorf("smtptest: parse message: %w", err)
	}
	p := &Parsed{Header: msg.Header}
	dec := new(mime.WordDecoder)
	if p.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return nil, fmt.Errorf("smtptest: decode Subject: %w", err)
	}
	if p.From, err = mail.ParseAddress(msg.Header.Get("From")); err != nil {
		return nil, fmt.Errorf("smtptest: parse From: %w", err)
	}
	if p.To, err = msg.Header.AddressList("To"); err != nil {
		return nil, fmt.Errorf("smtptest: parse To: %w", err)
	}
	if err := p.walk(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body); err != nil {
		return nil, err
	}
	return p, nil
}

// walk reads one entity, descending into multiparts.
func (p *Parsed) walk(contentType, encoding string, body io.Reader) error {
	if contentType == "" {
		contentType = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("smtptest: Content-Type %q: %w", contentType, err)
	}
	p.Types = append(p.Types, mediaType)
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("smtptest: multipart: %w", err)
			}
			if err := p.walk(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part); err != nil {
				return err
			}
		}
	}
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body) // skips CR and LF
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("smtptest: %s body: %w", mediaType, err)
	}
	switch text := strings.ReplaceAll(string(data), "\r\n", "\n"); mediaType {
	case "text/plain":
		p.Text = text
	case "text/html":
		p.HTML = text
	}
	return nil
}
