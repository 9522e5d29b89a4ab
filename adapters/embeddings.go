package adapters

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// Embeddings. An OpenAI-compatible upstream gets the client's request with
// only "model" rewritten, and its answer goes back as it is. Gemini and
// Cohere get a request of their own, built from what embedInput reads, and
// their vectors come back through embeddingList in OpenAI's shape.

// Embed sends one embeddings attempt with the key at c.Key. The usage of
// a compatible server that reports none is estimated.
func (o *openAI) Embed(c *Call, r *Reply) error {
	if err := o.post(&o.embeddings, c, r, false, "data"); err != nil {
		return err
	}
	if !r.Usage.Known {
		if in, f := readEmbedInput(c.Body); f == nil {
			r.Usage = in.estimated()
		}
	}
	return nil
}

// maxEmbedDimensions bounds the "dimensions" a client may ask a
// translated embeddings call for: above the largest model's (3072), and
// small enough that no answer the gateway makes itself (the mock's)
// grows without bound.
const maxEmbedDimensions = 4096

// embedInput is what the translations read of an OpenAI embeddings
// request.
type embedInput struct {
	// texts holds the inputs; with tokens set, each input's raw JSON
	// token array, which only the mock takes.
	texts  []string
	tokens bool
	// base64 is set for encoding_format "base64".
	base64 bool
	// dimensions is the size asked for, 0 for the model's own.
	dimensions int
	// inputType is Cohere's input_type, which a client that knows its
	// target is Cohere may send.
	inputType string
}

// readEmbedInput reads an OpenAI embeddings request. What it cannot read
// is Unsupported: the one protocol that relays the request as it is
// (OpenAI's) may take it, or will say why not.
func readEmbedInput(body []byte) (*embedInput, *Failure) {
	var req struct {
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
		Dimensions     *int            `json:"dimensions"`
		InputType      string          `json:"input_type"`
	}
	if err := CheckJSON(body); err != nil {
		return nil, untranslatable("cannot read the embeddings request: %v", err)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, untranslatable("cannot read the embeddings request: %v", err)
	}
	in := &embedInput{inputType: req.InputType}
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		in.base64 = true
	default:
		return nil, untranslatable("encoding_format %q is not supported; use float or base64", req.EncodingFormat)
	}
	if d := req.Dimensions; d != nil {
		if *d < 1 || *d > maxEmbedDimensions {
			return nil, untranslatable("dimensions must be between 1 and %d", maxEmbedDimensions)
		}
		in.dimensions = *d
	}
	if !in.readInput(bytes.TrimSpace(req.Input)) {
		return nil, untranslatable("input must be a string, an array of strings, or token ids ([int] or [[int]])")
	}
	return in, nil
}

// readInput reads "input": a string, a non-empty array of strings, one
// array of token ids, or arrays of them.
func (in *embedInput) readInput(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return false
		}
		in.texts = []string{s}
		return true
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil || len(items) == 0 {
		return false
	}
	switch items[0][0] {
	case '"':
		in.texts = make([]string, len(items))
		for i, it := range items {
			if json.Unmarshal(it, &in.texts[i]) != nil {
				return false
			}
		}
		return true
	case '[':
		in.tokens = true
		for _, it := range items {
			if !tokenIDs(it) {
				return false
			}
			in.texts = append(in.texts, string(it))
		}
		return true
	}
	in.tokens = true
	in.texts = []string{string(raw)}
	return tokenIDs(raw)
}

// tokenIDs reports whether raw is a non-empty JSON array of integers.
func tokenIDs(raw json.RawMessage) bool {
	var ids []int64
	return raw[0] == '[' && json.Unmarshal(raw, &ids) == nil && len(ids) > 0
}

// estimated is the usage of an embeddings call whose upstream reports
// none, labelled as the gateway's own: a quarter of the texts' bytes, or
// the number of token ids.
func (in *embedInput) estimated() Usage {
	n := 0
	for _, t := range in.texts {
		if in.tokens {
			n += 4 * (strings.Count(t, ",") + 1)
		} else {
			n += len(t)
		}
	}
	return Usage{Prompt: (n + 3) / 4, Known: true, Estimated: true}
}

// embeddingList writes OpenAI's embeddings answer, one vector at a time,
// each as a JSON array of numbers or, for encoding_format base64, as
// OpenAI encodes it: the vector's float32s, little-endian, in standard
// base64.
type embeddingList struct {
	out    []byte
	base64 bool
	n      int
	// vec and raw are scratch space for one vector.
	vec []float64
	raw []byte
}

func newEmbeddingList(dst []byte, base64 bool) embeddingList {
	return embeddingList{out: append(dst[:0], `{"object":"list","data":[`...), base64: base64}
}

// add appends a vector.
func (l *embeddingList) add(v []float64) {
	if l.n > 0 {
		l.out = append(l.out, ',')
	}
	l.out = append(l.out, `{"object":"embedding","index":`...)
	l.out = strconv.AppendInt(l.out, int64(l.n), 10)
	l.out = append(l.out, `,"embedding":`...)
	if l.base64 {
		l.raw = l.raw[:0]
		for _, x := range v {
			l.raw = binary.LittleEndian.AppendUint32(l.raw, math.Float32bits(float32(x)))
		}
		l.out = append(l.out, '"')
		l.out = base64.StdEncoding.AppendEncode(l.out, l.raw)
		l.out = append(l.out, '"')
	} else {
		l.out = append(l.out, '[')
		for i, x := range v {
			if i > 0 {
				l.out = append(l.out, ',')
			}
			l.out = strconv.AppendFloat(l.out, x, 'g', -1, 64)
		}
		l.out = append(l.out, ']')
	}
	l.out = append(l.out, '}')
	l.n++
}

// addJSON appends a vector an upstream sent as a JSON array of numbers.
// It reports false, adding nothing, when values is anything else, or
// holds a number no float64 holds.
func (l *embeddingList) addJSON(values gjson.Result) bool {
	if !values.IsArray() {
		return false
	}
	l.vec = l.vec[:0]
	ok := true
	values.ForEach(func(_, v gjson.Result) bool {
		ok = v.Type == gjson.Number && !math.IsInf(v.Num, 0) && !math.IsNaN(v.Num)
		l.vec = append(l.vec, v.Num)
		return ok
	})
	if ok {
		l.add(l.vec)
	}
	return ok
}

// end closes the answer with the model's name and the usage.
func (l *embeddingList) end(model string, u Usage) []byte {
	name, _ := json.Marshal(model)
	l.out = append(l.out, `],"model":`...)
	l.out = append(l.out, name...)
	l.out = append(l.out, `,"usage":{"prompt_tokens":`...)
	l.out = strconv.AppendInt(l.out, int64(u.Prompt), 10)
	l.out = append(l.out, `,"total_tokens":`...)
	l.out = strconv.AppendInt(l.out, int64(u.Prompt), 10)
	return append(l.out, "}}"...)
}

// addEmbeddings adds the n vectors of an upstream's list, each the array
// itself (key "") or its field key, to l.
func addEmbeddings(l *embeddingList, list gjson.Result, key string, n int) *Failure {
	if !list.IsArray() {
		return &Failure{Class: Retryable, Status: fasthttp.StatusOK, Msg: "upstream answered 200 without embeddings"}
	}
	ok := true
	list.ForEach(func(_, e gjson.Result) bool {
		if key != "" {
			e = e.Get(key)
		}
		ok = l.n < n && l.addJSON(e)
		return ok
	})
	if !ok || l.n != n {
		return &Failure{Class: Retryable, Status: fasthttp.StatusOK,
			Msg: "upstream did not answer a vector of numbers for each of the " + strconv.Itoa(n) + " inputs"}
	}
	return nil
}
