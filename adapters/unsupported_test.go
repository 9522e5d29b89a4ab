package adapters

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Each protocol's 400s that are about the target, not the request, are
// Unsupported, so the engine moves on; the request's own faults stay
// BadRequest.
func TestTargetRefusalsPerProtocol(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    func(status int, body string) *Failure
		body string
		want Class
	}{
		{"openai decommissioned", openAIFailureOf, `{"error":{"message":"The model has been decommissioned","code":"model_decommissioned"}}`, Unsupported},
		{"openai unsupported parameter", openAIFailureOf, `{"error":{"message":"Unsupported parameter: 'temperature'","code":"unsupported_parameter"}}`, Unsupported},
		{"openai client fault", openAIFailureOf, `{"error":{"message":"messages must not be empty","code":"invalid_value"}}`, BadRequest},
		{"anthropic retired model", anthropicFailureOf, `{"type":"error","error":{"type":"invalid_request_error","message":"model: claude-2.0 is no longer available"}}`, Unsupported},
		{"anthropic client fault", anthropicFailureOf, `{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate"}}`, BadRequest},
		{"gemini unsupported", geminiFailureOf, `{"error":{"code":400,"message":"Function calling is not supported for this model.","status":"INVALID_ARGUMENT"}}`, Unsupported},
		{"gemini client fault", geminiFailureOf, `{"error":{"code":400,"message":"* contents: must not be empty","status":"INVALID_ARGUMENT"}}`, BadRequest},
		{"cohere unsupported", cohereFailureOf, `{"message":"model 'command' does not exist"}`, Unsupported},
		{"cohere client fault", cohereFailureOf, `{"message":"invalid role"}`, BadRequest},
	} {
		if f := tt.f(400, tt.body); f.Class != tt.want || (f.Class == Unsupported && f.Body == nil) {
			t.Errorf("%s: class %v body %s, want %v with a body to relay", tt.name, f.Class, f.Body, tt.want)
		}
	}
}

func responseOf(status int, body string) *fasthttp.Response {
	resp := &fasthttp.Response{}
	resp.SetStatusCode(status)
	resp.SetBodyString(body)
	return resp
}

func openAIFailureOf(status int, body string) *Failure {
	return (&openAI{}).failure(responseOf(status, body))
}

func anthropicFailureOf(status int, body string) *Failure {
	resp := responseOf(status, body)
	return anthropicFailure(status, &resp.Header, resp.Body(), time.Now())
}

func geminiFailureOf(status int, body string) *Failure {
	return geminiFailure(status, []byte(body), nil)
}

func cohereFailureOf(status int, body string) *Failure {
	return (&cohere{}).failure(responseOf(status, body))
}
