// Package mail renders and sends the gateway's outgoing mail (email
// verification, password reset, "your password was changed", and the
// operator's test message) through one SMTP server. It knows nothing of
// accounts, tokens or queues: a caller renders a Message from a Kind and
// Data, and Send delivers it once, telling a failure worth retrying from
// one that is not. Retries, backoff and durability belong to the caller's
// outbox.
//
// # Configuration
//
// Config holds the SMTP URL, the From address, two timeouts, an optional
// TLS configuration and an optional template directory. New validates
// it (ParseURL, Config.Validate) and loads the templates without
// connecting; Probe connects. No error, log line or Endpoint.String ever
// holds the SMTP password: url.Parse's own errors, which quote pieces of
// the URL, are replaced by a fixed explanation.
//
// # Connection policy
//
// Every Send opens its own connection (github.com/wneessen/go-mail as the
// SMTP client) and closes it after QUIT:
//
//   - smtp:// without credentials: STARTTLS when the server offers it,
//     plain SMTP otherwise.
//   - smtp:// with credentials: STARTTLS is required. A server that does
//     not offer it gets EHLO and nothing more: neither AUTH nor the mail.
//   - smtps://: TLS from the first byte (RFC 8314).
//
// TLS is at least 1.2 and verifies the server's certificate against the
// URL's host (Config.TLSConfig can add roots). AUTH uses PLAIN, else
// LOGIN, else what go-mail finds among the server's mechanisms (SCRAM,
// CRAM-MD5), always inside TLS. DialTimeout bounds the
// TCP connect; SendTimeout bounds the whole delivery, from the connect to
// QUIT, and the caller's context can end it sooner.
//
// # Messages
//
// A mail has Date, a Message-ID of 128 random bits at the From address's
// domain, From, To (one recipient), Subject and MIME-Version; its body is
// text/plain, or multipart/alternative with text/plain and text/html,
// both UTF-8 and quoted-printable. Non-ASCII subjects and display names
// go out as RFC 2047 encoded words. Header safety does not rely on the
// encoder alone: in a display name or subject every control character,
// line break (CR, LF, NEL, U+2028, U+2029) or other space becomes one
// plain space, and the text is cut at 200 (name) or 250 (subject)
// characters. A recipient must be a bare address (local@domain): one
// with a control character, a space, a display name, angle brackets, a
// comment, a quoted local part or an IP-literal domain is refused before
// any connection. An internationalised domain is sent in its ASCII
// (punycode) form.
//
// # Templates
//
// Each Kind (verify_email, password_reset, password_changed, test) has
// three templates, embedded in the binary from the templates directory:
//
//	<kind>.subject.tmpl  text/template, one line (line breaks become spaces)
//	<kind>.txt.tmpl      text/template, the text/plain part
//	<kind>.html.tmpl     html/template, the text/html part (escapes its data;
//	                     left empty, the mail is text only)
//
// They see Data: .SiteName, .Name (the recipient's display name, may be
// empty), .Email, .Link and .ExpiresIn (Expiry in words: "30 minutes",
// "24 hours", "2 days"). A file in Config.TemplateDir with one of these
// names replaces the built-in one; the others stay. At load every
// template is parsed and executed once with sample data, so a syntax
// error, an unknown field or an empty subject is an error at start that
// names the file; so is a *.tmpl file whose name is not one of the
// twelve (a misspelt override would otherwise be ignored). Other files in
// the directory are ignored.
//
// # Failures
//
// Send's error is a *SendError with the Stage that failed, the server's
// reply Code if there was one, and Permanent. Permanent means retrying
// the same message cannot help: the message was refused before sending
// (a bad address, an empty subject) or the server answered RCPT TO or
// DATA with 5xx (no such mailbox, message rejected). Everything else is
// temporary: 4xx replies, a refused or dropped connection, a timeout, a
// TLS failure, and also a 5xx while connecting, authenticating or at MAIL
// FROM, because those concern the configuration, not this message, and
// the mail should wait for the operator's fix rather than be dropped.
// Once the server has accepted the message, Send reports success even if
// the session's end fails, so a caller never sends it twice for that
// reason. A connection lost after the final "." but before the server's
// answer remains ambiguous, as in every SMTP client: it is temporary, and
// the retry may deliver a second copy.
//
// Probe sends the test message and returns one line for the operator:
// the server, whether TLS was used and its version, the user it
// authenticated as, and the server's answer or refusal.
package mail
