# Runs the real `coapgate dissect` binary the way a user would: arguments, stdin, and a bad
# argument (non-zero exit with a one-line message).
execute_process(COMMAND ${COAPGATE} dissect "40 02 12 34 91 00"
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "respond \\(bad_option\\) 4.02 Bad Option option=9"
   OR NOT out MATCHES "reply     60 82 12 34 ff")
  message(FATAL_ERROR "dissect of an unknown critical option: rc=${rc}\n${out}")
endif()

file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/dissect_input.txt "# comment\n40 00 12 34\n50 01 00 07\n")
execute_process(COMMAND ${COAPGATE} dissect INPUT_FILE ${CMAKE_CURRENT_BINARY_DIR}/dissect_input.txt
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "reset \\(ping\\)" OR NOT out MATCHES "4.04 Not Found")
  message(FATAL_ERROR "dissect from stdin: rc=${rc}\n${out}")
endif()

execute_process(COMMAND ${COAPGATE} dissect "4g"
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc EQUAL 0 OR NOT err MATCHES "not a hex digit")
  message(FATAL_ERROR "bad hex must fail: rc=${rc}\n${err}")
endif()

# Usage errors exit 2 (like configuration errors), with CLI11's message.
execute_process(COMMAND ${COAPGATE} --no-such-flag OUTPUT_VARIABLE out ERROR_VARIABLE err
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "an unknown flag must exit 2: rc=${rc}\n${err}")
endif()

# The quick start's demo input (deploy/run.sh) must keep showing a valid device POST.
execute_process(COMMAND ${COAPGATE} dissect INPUT_FILE ${EXAMPLES}
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT out MATCHES "route=/ topic=sensors/a\nverdict   request"
   OR NOT out MATCHES "route=/ topic=1\nverdict   respond \\(not_found\\)")
  message(FATAL_ERROR "deploy/examples/datagrams.txt: rc=${rc}\n${out}")
endif()
