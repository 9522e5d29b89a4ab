package adapters

import (
	"encoding/json"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// Cohere's embeddings (POST /v2/embed) take texts only, and an input_type
// OpenAI's request has no field for: a client that knows its target is
// Cohere may send one, else the gateway says search_document, what a RAG
// index embeds. Vectors are asked for as floats, and encoded for the
// client as it asked.

type cohereEmbedRequest struct {
	Model           string   `json:"model"`
	Texts           []string `json:"texts"`
	InputType       string   `json:"input_type"`
	EmbeddingTypes  []string `json:"embedding_types"`
	OutputDimension int      `json:"output_dimension,omitempty"`
}

var cohereFloats = []string{"float"}

// Embed sends one embeddings attempt with the key at c.Key.
func (co *cohere) Embed(c *Call, r *Reply) error {
	in, f := readEmbedInput(c.Body)
	if f != nil {
		return f
	}
	if in.tokens {
		return untranslatable("cohere embeds text only, not token ids")
	}
	inputType := in.inputType
	if inputType == "" {
		inputType = "search_document"
	}
	body, err := json.Marshal(&cohereEmbedRequest{Model: c.Upstream, Texts: in.texts, InputType: inputType,
		EmbeddingTypes: cohereFloats, OutputDimension: in.dimensions})
	if err != nil {
		return untranslatable("cannot translate the request for cohere: %v", err)
	}
	h := co.http
	req := h.request(&h.embeddings, c.Key)
	req.SetBodyRaw(body)
	resp, f := send(h.client, req, false, h.firstByte, h.timeout)
	if f != nil {
		return f
	}
	defer fasthttp.ReleaseResponse(resp)
	if status := resp.StatusCode(); status < 200 || status > 299 {
		return co.failure(resp)
	}
	r.Exhausted = exhaustedFor(&resp.Header)
	out, u, f := cohereEmbeddings(r.Body, resp.Body(), in, c.Upstream)
	if f != nil {
		return f
	}
	r.Body, r.Usage = out, u
	return nil
}

// cohereEmbeddings translates an embed answer ({"embeddings":{"float":
// [[...]]},"meta":{"billed_units":{"input_tokens"}}}; a bare list of
// vectors too, as v1 sends it) into OpenAI's answer, appended to dst[:0],
// and its usage: the billed input tokens, else an estimate.
func cohereEmbeddings(dst, body []byte, in *embedInput, model string) ([]byte, Usage, *Failure) {
	if CheckJSON(body) != nil {
		return nil, Usage{}, &Failure{Class: Retryable, Status: fasthttp.StatusOK, Msg: "upstream sent a body that is not JSON"}
	}
	res := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	list := res.Get("embeddings")
	if list.IsObject() {
		list = list.Get("float")
	}
	l := newEmbeddingList(dst, in.base64)
	if f := addEmbeddings(&l, list, "", len(in.texts)); f != nil {
		return nil, Usage{}, f
	}
	u := in.estimated()
	if billed := res.Get("meta.billed_units.input_tokens"); billed.Type == gjson.Number {
		u = Usage{Prompt: int(billed.Int()), Known: true}.Bounded()
	}
	return l.end(model, u), u, nil
}
