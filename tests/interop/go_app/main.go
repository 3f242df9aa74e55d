// An http-mode function on Go's net/http, as the golang-middleware template runs it.
// Usage: go_app PORT. Every route reports what net/http saw.
package main

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func orNil(v string) interface{} {
	if v == "" {
		return nil
	}
	return v
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]interface{}{
		"framework":         "go",
		"method":            r.Method,
		"path":              r.URL.Path,
		"query":             r.URL.RawQuery,
		"content_length":    orNil(r.Header.Get("Content-Length")),
		"transfer_encoding": orNil(strings.Join(r.TransferEncoding, ",")),
		"framework_length":  r.ContentLength,
		"body_len":          len(body),
		"body_crc":          crc32.ChecksumIEEE(body),
		"custom":            orNil(r.Header.Get("X-Custom")),
		"expect":            orNil(r.Header.Get("Expect")),
	})
}

// The classic watchdog's marshal_request envelope, made the way it makes it
// (types.MarshalRequest): the reference fwatchdog's marshal_request=true is checked against.
type marshalBody struct {
	Raw []byte `json:"raw"`
}

type marshalReq struct {
	Header http.Header `json:"header"`
	Body   marshalBody `json:"body"`
}

func classicEnvelope(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := json.Marshal(&marshalReq{Header: r.Header, Body: marshalBody{Raw: body}})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Write(out)
}

func main() {
	http.HandleFunc("/echo", echo)
	http.HandleFunc("/classic-envelope", classicEnvelope)
	http.HandleFunc("/cookies", func(w http.ResponseWriter, r *http.Request) {
		for _, name := range []string{"a", "b", "c"} {
			w.Header().Add("Set-Cookie", name+"="+name+"-value; Path=/")
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "cookies\n")
	})
	http.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "part-%d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
		}
	})
	http.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		size := 5 * 1000 * 1000
		if s := r.URL.Query().Get("size"); s != "" {
			size, _ = strconv.Atoi(s)
		}
		out := make([]byte, size)
		for i := range out {
			out[i] = byte(i % 256)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(out)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
