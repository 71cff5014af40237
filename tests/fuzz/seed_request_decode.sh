#!/bin/sh
# Writes the seed corpus of tests/fuzz/fuzz_request_decode.c into DIR (run.sh calls
# it with the fuzzer's work directory): request bodies of every endpoint
# (docs/api.md) and inputs for each rule of the parser, valid and invalid.
# Text only, generated here so that no corpus file is committed.
#   tests/fuzz/seed_request_decode.sh DIR
set -eu
dir=$1
mkdir -p "$dir"
n=0
seed() {
    n=$((n + 1))
    printf '%b' "$1" >"$dir/seed-$n.json"
}
cust='kms:v1:AQEBtvpnVNmwW/POSK5W21C/8gAAAAAAAAAAAAAAAAAAAAAJYWNtZS1wcm9kCmNteC1tYXN0ZXIAAAABADyjTB4mpTRLtshhAjbTvGZMkQyu1HsvZ6XcafbPM84Vnx9vTqsyRuiaKAF9bLVTAr3zIPcwOcy9Zjg6MHE='
user='kms:v1:AQKANPxRp6D/cqj8yfBuW0lIPrb6Z1TZsFvzzkiuVttQv/IJYWNtZS1wcm9kAAAAAAA+s1/L7/mw2mEp1TwAIECitoOzQoTMNu9289DQHkEx4JvBDAaj8UYi3JOGIaQAncqLjwAtQHRihGAZSnflsQ=='
ws='kms:v1:AQOAcfgmQohqOIRI2ad1LzLKejT8Uaeg/3Ko/MnwbltJSD4JYWNtZS1wcm9kAAAAAACMaxAqW+lP43dniYoAIOxWK4q3Y64gyU9mZkARkpQ1g2N5RUuA8MdQbfgfZtn3GO98Vfp2J3RiZ+JX/jvLhQ=='
seed "{\"site_id\":\"acme-prod\",\"customer_key\":\"$cust\",\"user_key\":\"$user\",\"workspace_key\":\"$ws\"}"
seed "{\n  \"site_id\": \"acme-prod\",\n  \"customer_key\": \"$cust\"\n}\n"
seed '{"site_id":"acme-prod"}'
seed '{"plaintext":"aGVsbG8=","site_id":"a"}'
seed '{"bytes":32}'
seed "{\"batch\":[{\"wrapped\":\"$user\"},{\"wrapped\":\"$ws\",\"site_id\":\"x\"}]}"
seed '{}'
seed '[]'
seed ' [ 1 , -2 , 3.5 , -0 , -0.0 , 1e5 , 1E-5 , 2.5e+10 , true , false , null ] '
seed '[9223372036854775807,-9223372036854775808]'
seed '[9223372036854775808]'
seed '[1e400,1e-400]'
seed '[01]'
seed '[1.]'
seed '["\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\u20ac \\ud83d\\ude00"]'
seed '{"\\u006b\\u0065\\u0079":"v","k\\u00e9":"\\u0000"}'
seed '["\\ud800","\\udc00","\\ud800\\u0041","\\x"]'
seed '["caf\0303\0251 \0342\0202\0254 \0360\0237\0230\0200 \0177"]'
seed '["\0300\0200","\0355\0240\0200","\0364\0220\0200\0200","\0377"]'
seed '["tab\there"]'
seed '{"a":1,"a":2}'
seed '{"a":[{"b":{"c":[[[[]]]]}}]}'
seed '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'
seed '[1\0000]'
seed '{"a":true\000,"b":null\000}'
seed '{"a":1} x'
seed '{"a":1}\n\r\t '
seed '{"a" : "b" , "c" :\n"d"}'
seed '["unterminated'
seed '{"a":tru}'
echo "seed_request_decode.sh: wrote $n seeds to $dir"
