package adapters

import (
	"encoding/json"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// Gemini's embeddings: one batchEmbedContents call carries every input as
// a request of its own, each naming the model again. Gemini embeds text
// only, and reports no usage for it, so the usage is estimated.

type (
	geminiEmbedBatch struct {
		Requests []geminiEmbedRequest `json:"requests"`
	}
	geminiEmbedRequest struct {
		Model                string        `json:"model"`
		Content              geminiContent `json:"content"`
		OutputDimensionality int           `json:"outputDimensionality,omitempty"`
	}
)

// Embed sends one embeddings attempt with the key at c.Key.
func (g *gemini) Embed(c *Call, r *Reply) error {
	in, f := readEmbedInput(c.Body)
	if f != nil {
		return f
	}
	if in.tokens {
		return untranslatable("gemini embeds text only, not token ids")
	}
	urls := g.urlsOf(c.Upstream)
	batch := geminiEmbedBatch{Requests: make([]geminiEmbedRequest, len(in.texts))}
	for i, t := range in.texts {
		batch.Requests[i] = geminiEmbedRequest{Model: urls.name, OutputDimensionality: in.dimensions,
			Content: geminiContent{Parts: []geminiPart{{Text: t}}}}
	}
	body, err := json.Marshal(&batch)
	if err != nil {
		return untranslatable("cannot translate the request for gemini: %v", err)
	}
	req := g.request(urls.embed, c.Key)
	req.SetBodyRaw(body)
	t := g.transport
	resp, f := send(t.client, req, false, t.firstByte, t.timeout)
	if f != nil {
		return f
	}
	defer fasthttp.ReleaseResponse(resp)
	if status := resp.StatusCode(); status < 200 || status > 299 {
		return geminiFailure(status, resp.Body(), resp.Header.Peek(fasthttp.HeaderRetryAfter))
	}
	out, f := geminiEmbeddings(r.Body, resp.Body(), in, c.Upstream)
	if f != nil {
		return f
	}
	r.Body, r.Usage = out, in.estimated()
	return nil
}

// geminiEmbeddings translates a BatchEmbedContentsResponse
// ({"embeddings":[{"values":[...]}]}, one per input, in order) into
// OpenAI's answer, appended to dst[:0].
func geminiEmbeddings(dst, body []byte, in *embedInput, model string) ([]byte, *Failure) {
	if CheckJSON(body) != nil {
		return nil, &Failure{Class: Retryable, Status: fasthttp.StatusOK, Msg: "upstream sent a body that is not JSON"}
	}
	res := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	if e := res.Get("error"); e.IsObject() {
		var ge geminiError
		if json.Unmarshal([]byte(e.Raw), &ge) == nil {
			return nil, geminiErrorFailure(&ge, ge.status(), nil)
		}
	}
	l := newEmbeddingList(dst, in.base64)
	if f := addEmbeddings(&l, res.Get("embeddings"), "values", len(in.texts)); f != nil {
		return nil, f
	}
	return l.end(model, in.estimated()), nil
}
